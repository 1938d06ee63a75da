"""One polygon per instance mask, for the formats that hold a single ring per object (YOLO
segmentation labels, Label Studio polygonlabels, VOC XML `<polygon>`).

`Masks.to_polygons` gives a mask's outer contours (OpenCV, through the centres of the boundary
pixels). A mask in several parts (an object cut by an occluder) is joined into one ring by
zero-width seams: from the ring so far to the nearest point of the next part, around that part
and back along the same seam, the largest part first and then always the nearest remaining
one. Filled, the ring covers the same parts (plus the one-pixel seam lines), which is how
ultralytics' own COCO converter keeps multi-part objects whole. Only the mask's tight crop is
read: nothing the size of the image is made.
"""

from __future__ import annotations

import numpy as np

from ...instance_masks import Masks


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """(squared distance, index in a, index in b) of the closest pair of points."""
    best = (np.inf, 0, 0)
    for start in range(0, len(a), 1024):  # bounded (1024 x len(b)) distance blocks
        d = ((a[start:start + 1024, None, :] - b[None, :, :]) ** 2).sum(-1)
        k = int(d.argmin())
        i, j = divmod(k, d.shape[1])
        if d[i, j] < best[0]:
            best = (float(d[i, j]), start + i, j)
    return best


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Polygon parts, each (K_i, 2) x, y points -> one (K, 2) ring joined by zero-width seams."""
    rest = sorted(parts, key=_area, reverse=True)
    ring = rest.pop(0)
    while rest:
        found = [_nearest(ring, part) for part in rest]
        k = min(range(len(rest)), key=lambda i: found[i][0])
        _, a, b = found[k]
        part = rest.pop(k)
        # ... ring[a] -> part[b] -> around the part -> part[b] -> ring[a] ...
        ring = np.concatenate([ring[: a + 1], part[b:], part[: b + 1], ring[a:]])
    return ring


def mask_ring(masks: Masks, i: int) -> np.ndarray | None:
    """Mask i as one (K, 2) float64 ring of x, y image pixels, K >= 3; None when the mask has
    no polygon (empty, or too small for a contour of three points)."""
    parts = [np.asarray(p, np.float64).reshape(-1, 2) for p in masks.to_polygons(i)]
    if not parts:
        return None
    return join_parts(parts)


def box_ring(xyxy) -> np.ndarray:
    """(4, 2) corners of an xyxy box: the polygon written for a detection whose mask has none."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return np.asarray([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
