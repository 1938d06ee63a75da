"""Finished work on disk: `DIR/.ovdet-label/` holds a manifest and one shard per chunk.

    manifest.json          the run manifest of `ovdet.kit.resume`: what decides the annotations
                           (ontology, detector settings, image list, chunk size); a resume with
                           other settings is refused
    chunk-000012.jsonl     the records of chunk 12, one JSON line per image

Each shard is written to a temporary file, flushed to disk and renamed into place: a shard on
disk is complete, so a crash, Ctrl-C or SIGKILL loses at most the chunks in flight. The
engines only produce records; the driver process alone writes shards (in Ray's case, as the
actors' results stream back), so there is one writer.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ResumeError
from ..files import DataFileError, read_json, read_jsonl, write_json, write_jsonl
from ..kit.resume import check_manifest

STATE_DIR = ".ovdet-label"
MANIFEST_FORMAT = "ovdet-label/2"  # 2: shards hold the Image records of ovdet.records
_SHARD = re.compile(r"^chunk-(\d{6,})\.jsonl$")


class ShardStore:
    """The shard folder of one output directory."""

    def __init__(self, out: str | Path):
        self.root = Path(out) / STATE_DIR

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def shard_path(self, chunk: int) -> Path:
        return self.root / f"chunk-{chunk:06d}.jsonl"

    def start(self, manifest: dict) -> None:
        """A fresh run: (re)create the folder with this manifest and no shards."""
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.root.iterdir():
            if _SHARD.match(p.name) or p.name.endswith(".tmp"):
                p.unlink()
        write_json(self.manifest_path, manifest, indent=1)

    def stored_manifest(self) -> dict:
        """The manifest on disk; {} when it is missing or unreadable (`check` says why)."""
        try:
            return read_json(self.manifest_path, "label manifest", expect=dict)
        except DataFileError:
            return {}

    def check(self, manifest: dict) -> None:
        """Refuse to resume when the stored manifest differs, naming what changed."""
        try:
            stored = read_json(self.manifest_path, "label manifest", expect=dict)
        except DataFileError as exc:
            raise ResumeError(f"cannot resume: {exc}; use --overwrite") from exc
        check_manifest(stored, manifest, self.root.parent)  # the protocol of ovdet.kit.resume

    def finished(self, expected: dict[int, list[str]]) -> dict[int, list[dict]]:
        """{chunk: records} of the shards on disk whose paths are exactly the chunk's.

        Temporary files of a write cut short are removed; a shard that does not match its
        chunk (should not happen: the manifest fixes the chunks) is computed again.
        """
        done: dict[int, list[dict]] = {}
        if not self.root.is_dir():
            return done
        for p in sorted(self.root.iterdir()):
            if p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                continue
            m = _SHARD.match(p.name)
            if not m:
                continue
            chunk = int(m.group(1))
            try:
                records = read_jsonl(p, "label shard")
            except DataFileError:
                continue
            if chunk in expected and [r.get("image") for r in records] == expected[chunk]:
                done[chunk] = records
        return done

    def write(self, chunk: int, records: list[dict]) -> None:
        """One shard, atomically and durably (fsync before the rename)."""
        write_jsonl(self.shard_path(chunk), records)
