"""Images -> the rows the index stores: one forward pass per batch (`Detector.encode`, the
vocabulary-free image pass), then the backend's `region_rows` per image. Shared by the local
engine and the Ray actors (what they send back is this module's plain numpy `EncodedChunk`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import ImageReadError, OvdetError, first_line
from .store import image_id, schemas, vector_array


@dataclass
class EncodedChunk:
    """Rows of one batch of images, ready to append.

    regions: image_id (N,) int64, box (N, 4) float32 xyxy pixels of the image itself,
        objectness (N,) float32 (NaN: none), vector (N, E) float32.
    images: one dict per encoded image (image_id, path, size, mtime_ns, height, width,
        regions, vector (E,)).
    skipped: (path, reason) of the images that could not be read.
    """

    regions: dict[str, np.ndarray]
    images: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def merge(cls, chunks: Sequence["EncodedChunk"]) -> "EncodedChunk":
        """One chunk holding the rows of `chunks` (all with images), in order."""
        if len(chunks) == 1:
            return chunks[0]
        regions = {k: np.concatenate([c.regions[k] for c in chunks]) for k in chunks[0].regions}
        return cls(regions, [im for c in chunks for im in c.images], [s for c in chunks for s in c.skipped])

    @property
    def width(self) -> int:
        return int(self.regions["vector"].shape[1])

    def tables(self, dtype: str):
        """(regions, images) pyarrow tables in the store's schema (vectors in `dtype`)."""
        import pyarrow as pa

        images_schema, regions_schema = schemas(self.width, dtype)
        r = self.regions
        regions = pa.table({
            "image_id": pa.array(r["image_id"], pa.int64()),
            "box": pa.FixedSizeListArray.from_arrays(pa.array(r["box"].reshape(-1), pa.float32()), 4),
            "objectness": pa.array(r["objectness"], pa.float32()),
            "vector": vector_array(r["vector"], dtype),
        }, schema=regions_schema)
        cols = {k: [im[k] for im in self.images] for k in ("image_id", "path", "size", "mtime_ns", "height", "width", "regions")}
        vectors = np.stack([im["vector"] for im in self.images]) if self.images else np.zeros((0, self.width))
        images = pa.table({**cols, "vector": vector_array(vectors, dtype)}, schema=images_schema)
        return regions, images


def supports_index(backend: Any) -> bool:
    """True when the backend can store regions (OWL, CLIP regions) and score them later."""
    return all(callable(getattr(backend, name, None)) for name in ("encode_images", "region_rows", "score_rows"))


def check_backend(detector) -> None:
    if not supports_index(detector.backend):
        raise OvdetError(f"backend {detector.config.backend!r} cannot store regions for search (its image pass "
                         "depends on the vocabulary); use an OWL or CLIP-region preset, e.g. owlv2-b16")


def encode_chunk(detector, files: Sequence[tuple[str, int, int]], keep: int) -> EncodedChunk:
    """(path, size, mtime_ns) files -> their rows; unreadable images are skipped (listed).

    Boxes go back to the pixels of the image itself when it was decoded reduced."""
    import torch

    check_backend(detector)
    loaded, kept = [], []
    skipped: list[tuple[str, str]] = []
    for f in files:
        try:
            loaded.append(detector.load(f[0]))
            kept.append(f)
        except ImageReadError as exc:
            skipped.append((f[0], first_line(exc)))
    parts: dict[str, list[np.ndarray]] = {"image_id": [], "box": [], "objectness": [], "vector": []}
    images = []
    encoded = detector.encode(loaded) if loaded else []
    for (path, size, mtime), enc in zip(kept, encoded):
        rows = detector.backend.region_rows(enc.features, keep)
        (h, w), (rh, rw) = enc.image.size, enc.image.array.shape[:2]
        boxes = rows.boxes.float().cpu() * torch.tensor([w / rw, h / rh, w / rw, h / rh])
        n = len(boxes)
        key = image_id(path)
        parts["image_id"].append(np.full(n, key, np.int64))
        parts["box"].append(boxes.numpy().astype(np.float32))
        obj = rows.objectness
        parts["objectness"].append(np.full(n, np.nan, np.float32) if obj is None else obj.float().cpu().numpy())
        parts["vector"].append(rows.vectors.float().cpu().numpy())
        images.append({"image_id": key, "path": path, "size": int(size), "mtime_ns": int(mtime), "height": int(h),
                       "width": int(w), "regions": n, "vector": rows.image_vector.float().cpu().numpy()})
    if not images:
        return EncodedChunk({"image_id": np.zeros(0, np.int64), "box": np.zeros((0, 4), np.float32),
                             "objectness": np.zeros(0, np.float32), "vector": np.zeros((0, 1), np.float32)}, [], skipped)
    return EncodedChunk({k: np.concatenate(v) for k, v in parts.items()}, images, skipped)
