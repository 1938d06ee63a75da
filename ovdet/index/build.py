"""`ovdet index`: image files -> the index, incrementally.

An image is (re)encoded when its path is new or its size or modification time changed; the
others are left as they are. Encoded images are appended every `FLUSH_SECONDS` (regions, then
the image rows that mark them done), so a run killed at any point loses at most those
seconds of work: the next run drops orphan regions and encodes their images again.
From `ann_min_rows` regions on, an ANN index is built at the end of the run (`ann.py`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..errors import OvdetError
from .store import VECTOR_DTYPES, IndexDatabaseError, Store, check_model

DEFAULT_REGIONS = 100  # regions kept per image (OWLv2 B/16 has 3,600 tokens)
FLUSH_SECONDS = 2.0  # encoded images are appended at least this often (and what a kill may lose)
FLUSH_IMAGES = 1024  # ... or once this many are waiting


@dataclass
class IndexReport:
    """What a run of `build_index` did."""

    encoded: int = 0  # images encoded by this run (new or changed)
    unchanged: int = 0  # images already in the index, left as they were
    changed: int = 0  # of `encoded`: images whose file changed since they were indexed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    images: int = 0  # in the index after the run
    regions: int = 0
    ann: bool = False  # whether the index has an ANN index after the run
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in ("encoded", "unchanged", "changed", "images", "regions", "ann")},
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "seconds": round(self.seconds, 3)}


def index_identity(config) -> dict[str, Any]:
    """What makes two indexes comparable: the checkpoints, and for CLIP-region presets how
    regions are proposed and embedded."""
    from ..calibration import weights_identity

    identity = weights_identity(config)
    if config.backend == "clip":
        identity.update({k: getattr(config, k) for k in ("proposer", "proposals", "region_mode", "crop_context",
                                                          "dense_size")})
    return identity


def list_files(sources: Iterable[str]) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """Command-line sources (files, folders, globs) -> (absolute path, size, mtime_ns) of each
    file, and (path, reason) of those that do not exist."""
    from ..io import expand_image_args, is_url

    found, missing, seen = [], [], set()
    for path in expand_image_args(sources):
        if is_url(path):
            missing.append((path, "URLs cannot be indexed (no size or time to notice changes): download them first"))
            continue
        full = os.path.abspath(path)
        if full in seen:
            continue
        seen.add(full)
        try:
            st = os.stat(full)
        except OSError as exc:
            missing.append((path, exc.strerror or "cannot be read"))
            continue
        found.append((full, st.st_size, st.st_mtime_ns))
    return found, missing


def plan(store: Store | None, files: Sequence[tuple[str, int, int]]) -> tuple[list, int, list[str]]:
    """(files to encode, how many are unchanged, paths of changed ones)."""
    known = store.known() if store is not None else {}
    todo = [f for f in files if known.get(f[0]) != (f[1], f[2])]
    changed = [f[0] for f in todo if f[0] in known]
    return todo, len(files) - len(todo), changed


def resolve_model(uri: str, model: str | None, manifest: dict | None, device: str | None, overrides: dict):
    """The config to index or search with: `model` (default: the one the index was built
    with); `IndexDatabaseError` when it is another model than the index's."""
    from ..model_names import resolve_config
    from ..defaults import DEFAULT_DETECTOR

    name = model or (manifest or {}).get("model") or DEFAULT_DETECTOR
    if os.path.exists(str(name)):  # a YAML or checkpoint folder: recorded so that any folder finds it
        name = os.path.abspath(str(name))
    config = resolve_config(name, device=device, **{k: v for k, v in overrides.items() if v is not None})
    if manifest is not None:
        check_model(manifest, index_identity(config), uri)
    return name, config


def build_index(uri: str, sources: Sequence[str], model: str | None = None, *, regions: int | None = None,
                dtype: str | None = None, engine: str = "local", device: str | None = None, progress: bool = True,
                ann_min_rows: int | None = None, ann_kind: str = "ivf_sq", detector=None,
                ray_options: dict | None = None, **overrides) -> IndexReport:
    """Index (or update the index of) the images named by `sources` into the database `uri`.

    `regions` per image and the vector `dtype` ("fp16" default, "fp32" for scores equal to
    `ovdet detect`'s to float precision) are fixed when the index is created. `detector`: an
    already built `Detector` of the same model (the Python API's)."""
    from ..progress import progress_bar
    from .ann import DEFAULT_ANN_MIN_ROWS, refresh_ann

    start = time.perf_counter()
    uri = str(uri)
    manifest = Store.read_manifest(uri)
    name, config = resolve_model(uri, model, manifest, device, overrides) if detector is None else \
        (model or detector.config.name, detector.config)
    if detector is not None and manifest is not None:
        check_model(manifest, index_identity(config), uri)
    keep, dtype = _settings(manifest, regions, dtype, uri)
    store = Store.open(uri) if manifest is not None else None
    report = IndexReport()
    if store is not None:
        store.drop_orphans()
    files, report.skipped = list_files(sources)
    if not files and not report.skipped:
        raise OvdetError("no images found in the given sources")
    todo, report.unchanged, changed = plan(store, files)
    report.changed = len(changed)
    if store is not None and changed:
        from .store import image_id

        store.delete_images(image_id(p) for p in changed)
    size = config.batch_size
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]

    def create(width: int) -> Store:
        return Store.create(uri, {"model": str(name), "identity": index_identity(config), "backend": config.backend,
                                  "width": width, "dtype": dtype, "regions": keep})

    with progress_bar(total=len(todo), desc="index", unit="img", enabled=progress) as bar:
        writer = ChunkWriter(store, create, dtype, report, bar)
        write = writer.add
        if engine == "ray" and chunks:
            from .ray_engine import index_on_ray

            index_on_ray(config, chunks, keep, write, **(ray_options or {}))
        elif chunks:
            from .rows import check_backend, encode_chunk

            if detector is None:
                from ..detector import Detector

                detector = Detector.from_config(config)
            check_backend(detector)
            for chunk in chunks:
                write(encode_chunk(detector, chunk, keep))
        writer.flush()
    store = writer.store
    if store is not None:
        report.ann = refresh_ann(store, DEFAULT_ANN_MIN_ROWS if ann_min_rows is None else ann_min_rows,
                                 changed=report.encoded > 0 or report.changed > 0, kind=ann_kind)
        report.images, report.regions = store.count()
    report.seconds = time.perf_counter() - start
    return report


class ChunkWriter:
    """Appends encoded chunks to the store, buffered: one pair of appends (regions, then image
    rows) per `FLUSH_SECONDS` of encoding rather than per forward batch, since each append is
    a LanceDB commit (~20 ms: 10 % of a full-size OWL image on 2 CPU cores when done per
    image). A kill loses at most the buffered images; the store is created on the first flush."""

    def __init__(self, store: Store | None, create: Callable[[int], Store], dtype: str, report: IndexReport, bar):
        self.store, self.create, self.dtype, self.report, self.bar = store, create, dtype, report, bar
        self.pending: list = []
        self.since = time.monotonic()

    def add(self, chunk) -> None:
        self.report.skipped += chunk.skipped
        self.bar.update(len(chunk.images) + len(chunk.skipped))
        if chunk.images:
            self.pending.append(chunk)
        if time.monotonic() - self.since >= FLUSH_SECONDS or sum(len(c.images) for c in self.pending) >= FLUSH_IMAGES:
            self.flush()

    def flush(self) -> None:
        from .rows import EncodedChunk

        self.since = time.monotonic()
        if not self.pending:
            return
        chunk = EncodedChunk.merge(self.pending)
        self.pending = []
        if self.store is None:
            self.store = self.create(chunk.width)
        self.store.add(*chunk.tables(self.dtype))
        self.report.encoded += len(chunk.images)


def _settings(manifest: dict | None, regions: int | None, dtype: str | None, uri: str) -> tuple[int, str]:
    """Regions per image and vector dtype: the index's own once it exists."""
    if dtype is not None and dtype not in VECTOR_DTYPES:
        raise OvdetError(f"vector dtype must be one of {', '.join(VECTOR_DTYPES)}, got {dtype!r}")
    if regions is not None and regions < 1:
        raise OvdetError(f"regions per image must be at least 1, got {regions}")
    if manifest is None:
        return regions or DEFAULT_REGIONS, dtype or "fp16"
    for key, asked in (("regions", regions), ("dtype", dtype)):
        if asked is not None and asked != manifest[key]:
            raise IndexDatabaseError(f"{uri} stores {key} {manifest[key]!r}, not {asked!r}: it is fixed when an index "
                                     "is created (index into another --db)")
    return manifest["regions"], manifest["dtype"]
