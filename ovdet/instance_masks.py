"""`Masks`: instance masks kept compact, one tight crop per detection.

A 20000x20000 image with 100 masks would need 40 GB as an (N, H, W) bool array; each mask here
is stored as the bool crop of its own bounding rectangle plus where that crop sits, so memory
follows the objects' areas, not the image's. The dense array is built only when asked
(`to_dense`, supervision); COCO run-length encoding (`to_rle`) is computed from the crops
without the full image.

Coordinates: `origins[i] = (y, x)` is the top-left pixel of crop i in the image; crop i covers
rows y .. y + h_i - 1 and columns x .. x + w_i - 1. An empty mask is a 0x0 crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np


def tight_crop(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(crop, y, x): the (H, W) bool `mask` cut to the rectangle holding its true pixels
    ((0, 0) crop if none)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return np.zeros((0, 0), bool), 0, 0
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return np.ascontiguousarray(mask[y0:y1, x0:x1]), int(y0), int(x0)


@dataclass(frozen=True, eq=False)
class Masks:
    """N instance masks of an image of `image_size` = (height, width).

    crops: N bool arrays (h_i, w_i), each the mask's tight bounding rectangle.
    origins: (N, 2) int64, (y, x) of each crop's top-left pixel in the image.
    """

    crops: tuple[np.ndarray, ...]
    origins: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        h, w = (int(v) for v in self.image_size)
        set_(self, "image_size", (h, w))
        origins = np.asarray(self.origins, np.int64).reshape(-1, 2)
        crops = tuple(np.asarray(c, bool) for c in self.crops)
        if len(crops) != len(origins):
            raise ValueError(f"Masks: {len(crops)} crops but {len(origins)} origins")
        for crop, (y, x) in zip(crops, origins.tolist()):
            if crop.ndim != 2 or (crop.size and (y < 0 or x < 0 or y + crop.shape[0] > h or x + crop.shape[1] > w)):
                raise ValueError(f"Masks: a crop of shape {crop.shape} at (y={y}, x={x}) does not fit "
                                 f"an image of {h}x{w}")
        set_(self, "crops", crops)
        set_(self, "origins", origins)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, masks: Iterable[np.ndarray], image_size: tuple[int, int] | None = None) -> "Masks":
        """From full-image masks: an (N, H, W) array or an iterable of (H, W) arrays (nonzero =
        inside); each is cut to its tight crop at once, so an iterable never holds N full masks."""
        crops, origins, size = [], [], image_size
        for mask in masks:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"Masks.from_dense: each mask must be (H, W), got {mask.shape}")
            size = size or mask.shape
            if tuple(mask.shape) != tuple(size):
                raise ValueError(f"Masks.from_dense: a mask of {mask.shape} in an image of {tuple(size)}")
            crop, y, x = tight_crop(mask.astype(bool, copy=False))
            crops.append(crop)
            origins.append((y, x))
        if size is None:
            raise ValueError("Masks.from_dense: no masks and no image_size")
        return cls(tuple(crops), np.asarray(origins, np.int64).reshape(-1, 2), tuple(size))

    @classmethod
    def from_crops(cls, crops: Sequence[np.ndarray], origins: Any, image_size: tuple[int, int]) -> "Masks":
        """From crops that may overhang the image or hold empty borders (e.g. a box's region):
        each is clipped to the image and cut to its tight rectangle."""
        h, w = image_size
        tight, where = [], []
        for crop, (y, x) in zip(crops, np.asarray(origins, np.int64).reshape(-1, 2).tolist()):
            crop = np.asarray(crop, bool)
            top, left = max(0, -y), max(0, -x)
            crop = crop[top: max(top, h - y), left: max(left, w - x)]
            sub, dy, dx = tight_crop(crop)
            tight.append(sub)
            where.append((y + top + dy, x + left + dx) if sub.size else (0, 0))
        return cls(tuple(tight), np.asarray(where, np.int64).reshape(-1, 2), image_size)

    @classmethod
    def from_rle(cls, rles: Sequence[dict], image_size: tuple[int, int]) -> "Masks":
        """From COCO RLE dicts ({"size": [h, w], "counts": str or bytes}); decoded one at a time."""
        from pycocotools import mask as mask_utils

        h, w = image_size

        def decoded():
            for rle in rles:
                if list(rle.get("size", ())) != [h, w]:
                    raise ValueError(f"Masks.from_rle: an RLE of size {rle.get('size')} in an image of {h}x{w}")
                counts = rle["counts"]
                yield mask_utils.decode({"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts})

        return cls.from_dense(decoded(), image_size)

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> "Masks":
        return cls((), np.zeros((0, 2), np.int64), image_size)

    @classmethod
    def concat(cls, items: Sequence["Masks"]) -> "Masks":
        """Join masks of the same image."""
        if any(m.image_size != items[0].image_size for m in items):
            raise ValueError("Masks.concat: all parts must share image_size")
        return cls(sum((m.crops for m in items), ()), np.concatenate([m.origins for m in items]), items[0].image_size)

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: Any) -> "Masks":
        """Rows by boolean mask, index array, slice or int (as `Detections[...]`)."""
        rows = np.arange(len(self))[index]
        rows = np.atleast_1d(rows)
        return Masks(tuple(self.crops[i] for i in rows.tolist()), self.origins[rows], self.image_size)

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 pixel counts."""
        return np.asarray([int(c.sum()) for c in self.crops], np.int64)

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 xyxy of each mask's tight rectangle (zeros for an empty mask)."""
        out = np.zeros((len(self), 4), np.float32)
        for i, (crop, (y, x)) in enumerate(zip(self.crops, self.origins.tolist())):
            if crop.size:
                out[i] = (x, y, x + crop.shape[1], y + crop.shape[0])
        return out

    def dense(self, i: int) -> np.ndarray:
        """Mask i as an (H, W) bool array."""
        out = np.zeros(self.image_size, bool)
        crop, (y, x) = self.crops[i], self.origins[i].tolist()
        out[y: y + crop.shape[0], x: x + crop.shape[1]] = crop
        return out

    def to_dense(self) -> np.ndarray:
        """(N, H, W) bool: what supervision's `Detections.mask` holds. N x H x W bytes: for big
        images prefer `dense(i)` one at a time, or the crops."""
        out = np.zeros((len(self), *self.image_size), bool)
        for i, (crop, (y, x)) in enumerate(zip(self.crops, self.origins.tolist())):
            out[i, y: y + crop.shape[0], x: x + crop.shape[1]] = crop
        return out

    # -- geometry -----------------------------------------------------------------------------
    def translate(self, dx: int, dy: int, image_size: tuple[int, int]) -> "Masks":
        """The masks moved by (dx, dy) pixels into an image of `image_size` (a tile's masks into
        the whole image), clipped to it."""
        return Masks.from_crops(self.crops, self.origins + np.asarray([dy, dx], np.int64), image_size)

    def union(self, rows: Sequence[int]) -> "Masks":
        """One mask: the union of masks `rows` (merging the masks of boxes merged across tiles)."""
        parts = [(self.crops[i], *self.origins[i].tolist()) for i in rows if self.crops[i].size]
        if not parts:
            return Masks((np.zeros((0, 0), bool),), np.zeros((1, 2), np.int64), self.image_size)
        y0 = min(y for _, y, _ in parts)
        x0 = min(x for _, _, x in parts)
        y1 = max(y + c.shape[0] for c, y, _ in parts)
        x1 = max(x + c.shape[1] for c, _, x in parts)
        canvas = np.zeros((y1 - y0, x1 - x0), bool)
        for crop, y, x in parts:
            canvas[y - y0: y - y0 + crop.shape[0], x - x0: x - x0 + crop.shape[1]] |= crop
        return Masks((canvas,), np.asarray([[y0, x0]], np.int64), self.image_size)

    # -- formats ------------------------------------------------------------------------------
    def to_rle(self) -> list[dict]:
        """COCO compressed RLE per mask, as `pycocotools.mask.encode` writes it but with `counts`
        a str (JSON-ready): {"size": [h, w], "counts": str}. Computed from the crops: the
        column-major runs of a crop are shifted into the image's, so no (H, W) array is made."""
        from pycocotools import mask as mask_utils

        h, w = self.image_size
        out = []
        for crop, (y, x) in zip(self.crops, self.origins.tolist()):
            counts = _runs(crop, y, x, h, w)
            rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
            out.append({"size": [h, w], "counts": rle["counts"].decode("ascii")})
        return out

    def to_polygons(self, i: int) -> list[list[float]]:
        """Mask i as COCO polygons: a list of flat [x1, y1, x2, y2, ...] outer contours in image
        pixels, through the centres of the boundary pixels (OpenCV's `findContours`, as
        supervision and ultralytics convert masks); parts under 3 points are dropped."""
        import cv2

        crop, (y, x) = self.crops[i], self.origins[i].tolist()
        if not crop.size:
            return []
        contours, _ = cv2.findContours(np.pad(crop, 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygons = []
        for contour in contours:
            if len(contour) < 3:
                continue
            pts = contour.reshape(-1, 2).astype(np.float64) + (x - 1, y - 1)
            polygons.append([round(float(v), 2) for v in pts.reshape(-1)])
        return polygons

    def __repr__(self) -> str:
        return f"Masks(n={len(self)}, image_size={self.image_size})"


def _runs(crop: np.ndarray, y: int, x: int, h: int, w: int) -> list[int]:
    """Uncompressed COCO RLE counts (alternating 0-runs and 1-runs, column-major, starting with
    zeros) of `crop` placed at (y, x) in an h x w image."""
    total = h * w
    if not crop.size or not crop.any():
        return [total]
    ch = crop.shape[0]
    # per crop column, the rows where a run of ones starts and ends (exclusive)
    padded = np.zeros((ch + 2, crop.shape[1]), np.int8)
    padded[1:-1] = crop
    step = np.diff(padded, axis=0)  # (ch + 1, cw): +1 where a run starts, -1 where it ends
    s_cols, s_rows = np.nonzero(step.T == 1)  # transposed: sorted by column, then row
    e_cols, e_rows = np.nonzero(step.T == -1)
    starts = (x + s_cols) * h + y + s_rows
    ends = (x + e_cols) * h + y + e_rows
    # a run that ends at the bottom of a column and one that starts at the top of the next touch
    # in column-major order: join them
    keep_start = np.ones(len(starts), bool)
    keep_end = np.ones(len(ends), bool)
    touch = ends[:-1] == starts[1:]
    keep_end[:-1] &= ~touch
    keep_start[1:] &= ~touch
    starts, ends = starts[keep_start], ends[keep_end]
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0], bounds[-1] = 0, total
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds).tolist()
    return counts[:-1] if counts[-1] == 0 else counts  # pycocotools ends on the last run
