"""The one resume protocol of ovdet's long runs (`ovdet eval` / `calibrate`, `ovdet label`).

A run that writes its finished work as it goes first records a *run manifest*: a JSON object
with a `format` and every setting that decides its results (the detector's settings less the
run-only ones below, the vocabulary, the images...). Then:

- without --resume or --overwrite, an unfinished run in the way is refused
  (`unfinished_message`): finished work is never discarded silently;
- --resume continues it when the stored manifest equals the wanted one (`check_manifest`),
  and otherwise refuses in one wording that names every setting that changed; with nothing to
  resume it says so (`nothing_to_resume`) and starts from the first item;
- --overwrite starts over (the unfinished run is deleted);
- --resume and --overwrite exclude each other (`check_resume_flags`).

Where the manifest lives is the run's business (eval: the first line of its partial JSONL;
label: manifest.json beside the shards); what it holds and how it is checked is decided here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..errors import ResumeError

# detector settings that do not change which boxes come out: a resume may change them
RUN_ONLY_FIELDS = ("device", "batch_size", "description", "name", "cache_text", "compile")


def detector_settings(config: Any) -> dict:
    """The detector settings a run manifest records (a `DetectorConfig` less the run-only fields)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_ONLY_FIELDS}


def as_stored(manifest: dict) -> dict:
    """The manifest as it reads back from a JSON file (tuples become lists...)."""
    return json.loads(json.dumps(manifest))


def changed_settings(stored: dict, wanted: dict) -> list[str]:
    """The settings that differ, one level deep: "threshold", "detector.nms_iou", ..."""
    changed = []
    for key in dict.fromkeys([*wanted, *stored]):
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{k}" for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]
        else:
            changed.append(key)
    return changed


def check_manifest(stored: Any, wanted: dict, where: Any) -> None:
    """Refuse to resume the run in `where` unless its stored manifest equals `wanted`.

    One wording for every command: another ovdet version (the format differs) or the settings
    that changed, and both ways out."""
    if not isinstance(stored, dict) or stored.get("format") != wanted.get("format"):
        raise ResumeError(f"cannot resume in {where}: it was written by another ovdet version; "
                          "use --overwrite to start over")
    if stored != wanted:
        raise ResumeError(f"cannot resume in {where}: the settings differ from the interrupted run's "
                          f"({', '.join(changed_settings(stored, wanted))}); rerun with the same settings, "
                          "or --overwrite to start over")


def check_resume_flags(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ResumeError("--resume and --overwrite exclude each other: continue the run, or start over")


def unfinished_message(where: Any, done: int, unit: str = "image(s)") -> str:
    """The refusal when a run would replace an unfinished one: it names both ways out."""
    return (f"{where} holds an unfinished run ({done} {unit} done): --resume continues it, "
            "--overwrite starts over and deletes it")


def nothing_to_resume(where: Any) -> str:
    """The note of a --resume that finds no unfinished run (the run starts from the beginning)."""
    return f"ovdet: nothing to resume in {where}; starting from the first image"
