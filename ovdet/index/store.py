"""The search index on disk: a LanceDB database (a local folder, or any URI LanceDB opens,
e.g. `s3://bucket/index`) with three tables.

    manifest  one row: the JSON manifest (model identity, vector width and dtype, regions kept)
    images    image_id, path, size, mtime_ns, height, width, regions, vector: one row per image,
              written AFTER its regions, so an image row means "this image is done"
    regions   image_id, box (4 float32, xyxy pixels of the image itself), objectness (float32,
              NaN when the model has none), vector (E float16 or float32)

A run killed between the two writes leaves regions without an image row ("orphans"); the next
run deletes them before it adds anything (`drop_orphans`). LanceDB commits each write as a
new table version, so a write cut short leaves the table as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import OvdetError

REGIONS, IMAGES, META = "regions", "images", "manifest"
FORMAT = 1  # the tables' layout; a database of another format is refused
VECTOR_DTYPES = ("fp16", "fp32")


class IndexDatabaseError(OvdetError, ValueError):
    """No index at the given location, an index of another model or format, or no LanceDB."""


def import_lancedb():
    # LanceDB's Rust core logs routine notes ("No existing dataset ... will be created") as warnings
    os.environ.setdefault("LANCEDB_LOG", "error")
    try:
        import lancedb
    except ImportError as exc:
        raise IndexDatabaseError('ovdet index needs LanceDB: pip install "ovdet[index]" (or lancedb)') from exc
    return lancedb


def image_id(path: str) -> int:
    """A stable int64 key for an image path (the regions table repeats it on every row)."""
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest(), "little", signed=True)


def is_local(uri: str) -> bool:
    return "://" not in uri


def schemas(width: int, dtype: str):
    """(images, regions) pyarrow schemas for vectors of `width` in `dtype` ("fp16"/"fp32")."""
    import pyarrow as pa

    value = pa.float16() if dtype == "fp16" else pa.float32()
    images = pa.schema([
        pa.field("image_id", pa.int64()), pa.field("path", pa.string()), pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()), pa.field("height", pa.int32()), pa.field("width", pa.int32()),
        pa.field("regions", pa.int32()), pa.field("vector", pa.list_(value, width)),
    ])
    regions = pa.schema([
        pa.field("image_id", pa.int64()), pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("objectness", pa.float32()), pa.field("vector", pa.list_(value, width)),
    ])
    return images, regions


def vector_array(vectors: np.ndarray, dtype: str):
    """(N, E) floats -> a pyarrow FixedSizeList column in `dtype`."""
    import pyarrow as pa

    arr = np.ascontiguousarray(vectors, np.float16 if dtype == "fp16" else np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def vectors_of(column) -> np.ndarray:
    """A FixedSizeList column (pyarrow Array or ChunkedArray) -> (N, E) numpy array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


class Store:
    """An opened index database. `Store.open` for an existing one, `Store.create` for a new."""

    def __init__(self, uri: str, db, manifest: dict[str, Any]):
        self.uri, self.db, self.manifest = uri, db, manifest
        self.images = db.open_table(IMAGES)
        self.regions = db.open_table(REGIONS)

    # -- opening -------------------------------------------------------------------------------
    @staticmethod
    def read_manifest(uri: str) -> dict[str, Any] | None:
        """The manifest of the index at `uri`; None when there is none (no folder, not an index)."""
        if is_local(uri) and not os.path.isdir(uri):
            return None
        db = import_lancedb().connect(uri)
        if META not in table_names(db):
            return None
        rows = db.open_table(META).to_arrow().to_pylist()
        return json.loads(rows[0]["value"]) if rows else None

    @classmethod
    def open(cls, uri: str) -> "Store":
        """The index at `uri`; `IndexDatabaseError` (one line) when there is none."""
        uri = str(uri)
        manifest = cls.read_manifest(uri)
        if manifest is None:
            raise IndexDatabaseError(f"no ovdet index at {uri}: build one with `ovdet index IMAGES --db {uri}`")
        if manifest.get("format") != FORMAT:
            raise IndexDatabaseError(f"{uri} is an index of format {manifest.get('format')}; this ovdet reads "
                                     f"format {FORMAT}: build it again")
        return cls(uri, import_lancedb().connect(uri), manifest)

    @classmethod
    def create(cls, uri: str, manifest: dict[str, Any]) -> "Store":
        """A new, empty index at `uri` with `manifest` (it must give `width` and `dtype`)."""
        import pyarrow as pa

        uri = str(uri)
        db = import_lancedb().connect(uri)
        images, regions = schemas(manifest["width"], manifest["dtype"])
        db.create_table(IMAGES, schema=images, mode="overwrite")
        db.create_table(REGIONS, schema=regions, mode="overwrite")
        # the manifest last: a folder without it is not an index yet, whatever else it holds
        meta = pa.table({"key": ["manifest"], "value": [json.dumps({**manifest, "format": FORMAT})]})
        db.create_table(META, data=meta, mode="overwrite")
        return cls.open(uri)

    # -- contents ------------------------------------------------------------------------------
    def known(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every image in the index."""
        t = self.images.search().select(["path", "size", "mtime_ns"]).limit(None).to_arrow()
        return dict(zip(t["path"].to_pylist(), zip(t["size"].to_pylist(), t["mtime_ns"].to_pylist())))

    def count(self) -> tuple[int, int]:
        """(images, regions) in the index."""
        return self.images.count_rows(), self.regions.count_rows()

    def add(self, regions, images) -> None:
        """Append pyarrow tables of `regions` then `images` (an image row marks it done)."""
        if regions.num_rows:
            self.regions.add(regions)
        if images.num_rows:
            self.images.add(images)

    def delete_images(self, ids: Iterable[int]) -> None:
        """Remove images (their row and their regions) by image_id: regions first, so that a
        run stopped in between leaves orphans, never an image without its regions."""
        for _, chunk in _chunks(sorted(set(int(i) for i in ids)), 1000):
            where = f"image_id IN ({', '.join(map(str, chunk))})"
            self.regions.delete(where)
            self.images.delete(where)

    def drop_orphans(self) -> int:
        """Delete regions whose image row is missing (a run killed between the two writes);
        returns how many images they belonged to."""
        done = set(self.images.search().select(["image_id"]).limit(None).to_arrow().column("image_id").to_pylist())
        ids: set[int] = set()
        for batch in self.scan(["image_id"]):
            ids.update(np.unique(batch.column("image_id").to_numpy()).tolist())
        orphans = ids - done
        for start, chunk in _chunks(sorted(orphans), 1000):
            self.regions.delete(f"image_id IN ({', '.join(map(str, chunk))})")
        return len(orphans)

    def compact(self) -> None:
        """Merge the small fragments that chunked appends leave and delete the table versions
        they replace (without this a folder holds every row twice after a run). Readers that
        still hold an older version (a search started before) may fail and retry; two
        `ovdet index` runs on one database at a time are not supported anyway."""
        import warnings
        from datetime import timedelta

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # LanceDB's note on exactly that
            for table in (self.images, self.regions):
                table.optimize(cleanup_older_than=timedelta(0))

    def scan(self, columns: list[str], batch_rows: int = 65536) -> Iterator[Any]:
        """The regions table, `columns` only, as pyarrow RecordBatches of about `batch_rows`."""
        reader = self.regions.search().select(columns).limit(None).to_batches(batch_rows)
        yield from reader

    def paths(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """image_id -> its images row (path, height, width) for `ids`."""
        ids = sorted(set(int(i) for i in ids))
        out: dict[int, dict[str, Any]] = {}
        for _, chunk in _chunks(ids, 1000):
            rows = (self.images.search().where(f"image_id IN ({', '.join(map(str, chunk))})")
                    .select(["image_id", "path", "height", "width"]).limit(None).to_arrow().to_pylist())
            out.update({r["image_id"]: r for r in rows})
        return out


def table_names(db) -> list[str]:
    """Table names of a LanceDB connection (`list_tables` in new LanceDB, `table_names` before)."""
    lister = getattr(db, "list_tables", None)
    if lister is not None:
        result = lister()
        names = getattr(result, "tables", result)
        return list(names)
    return list(db.table_names())


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def check_model(manifest: dict[str, Any], identity: dict[str, Any], uri: str) -> None:
    """`IndexDatabaseError` when the index at `uri` was built with another model than
    `identity` (`index_identity` of the detector asked for)."""
    if manifest.get("identity") != identity:
        built = manifest.get("identity", {})
        raise IndexDatabaseError(f"{uri} was built with {built.get('backend')} {built.get('weights')} "
                                 f"(model {manifest.get('model')!r}), not {identity.get('backend')} "
                                 f"{identity.get('weights')}: search it without --model, or index into another --db")
