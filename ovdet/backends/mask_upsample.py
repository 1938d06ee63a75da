"""SAM's mask upsampling, computed only where a mask can be: its processor's bilinear resize of
low-resolution logits to the image, restricted to each mask's region, in bounded memory.

`Sam2Processor.post_process_masks` resizes every (256, 256) logit map to the full (H, W) image
with `F.interpolate(mode="bilinear", align_corners=False)` and thresholds it at 0: 1.6 GB of
float32 per box on a 20000 x 20000 image. A bilinear output pixel is a weighted sum of the two
by two input pixels around the point it samples (non-negative weights), so it can be above 0
only where one of those inputs is: the output rows and columns whose sampled inputs meet the
bounding rectangle of the positive logits hold the whole mask, and only pixels whose inputs
differ in sign need computing at all. `upsample_to_crop` computes exactly those.

`upsample_masks` picks the way: images up to DIRECT_PIXELS go through `F.interpolate` itself, a
few boxes at a time, each output cut to its mask's crop at once (the processor's very
operation); larger ones through `upsample_to_crop`, which reproduces PyTorch's CPU kernel for
such sizes bit for bit (tests/test_masker_upsample.py compares the values with `F.interpolate`
and the masks with the processor's): the kernel computes the sampling position as one fused
multiply-add in float32 (scale * (i + 0.5) - 0.5) and each interpolation as
fma(v0, w0, round(v1 * w1)) along columns, then along rows; here the same operations run in
float64, where the product of two float32 values is exact, rounded to float32 after each step.
(Its scalar path for small outputs associates differently: values may then differ in the last
bit, the masks only where a logit is within that bit of 0.)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# float64 temporaries of one band of output rows: about 8 bytes x this many values, times four
BAND_VALUES = 2**21
# outputs up to this many pixels are resized by F.interpolate itself, this many values at a time
DIRECT_PIXELS = 2**22
DIRECT_VALUES = 2**25


@lru_cache(maxsize=32)
def axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w0, w1): output index j of a bilinear resize (align_corners=False) from
    `in_size` to `out_size` samples inputs i0[j] and i1[j] (int64) with weights w0[j], w1[j]
    (float32 values held in float64), as PyTorch's CPU kernel computes them."""
    if in_size == out_size:  # the kernel copies
        index = np.arange(out_size)
        return index, index, np.ones(out_size), np.zeros(out_size)
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    # fma(scale, j + 0.5, -0.5) rounded once to float32: the product is exact in float64
    src = (scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, w0.astype(np.float64), w1.astype(np.float64)


def _lerp(v0: np.ndarray, v1: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """fma(v0, w0, round32(v1 * w1)) rounded to float32, held in float64."""
    return (v0 * w0 + (v1 * w1).astype(np.float32)).astype(np.float32).astype(np.float64)


def _span(i0: np.ndarray, i1: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """The output range [a, b) whose samples i0/i1 (non-decreasing) meet inputs lo..hi."""
    return int(np.searchsorted(i1, lo, "left")), int(np.searchsorted(i0, hi, "right"))


def resize_window(logits: np.ndarray, out_size: tuple[int, int], top: int, bottom: int, cols: np.ndarray) -> np.ndarray:
    """Rows top..bottom, columns `cols` ((K,) int, ascending) of the (h, w) float32 map
    `logits` resized bilinearly to `out_size` = (H, W): (bottom - top, K) float32, equal to
    that part of `F.interpolate(..., out_size, mode="bilinear", align_corners=False)` on a CPU."""
    h, w = logits.shape
    y0, y1, wy0, wy1 = axis_weights(h, out_size[0])
    x0, x1, wx0, wx1 = axis_weights(w, out_size[1])
    lo, hi = int(y0[top]), int(y1[bottom - 1]) + 1  # the input rows these output rows read
    band = logits[lo:hi].astype(np.float64)
    along = _lerp(band[:, x0[cols]], band[:, x1[cols]], wx0[cols], wx1[cols])  # the column pass
    ys = slice(top, bottom)
    return _lerp(along[y0[ys] - lo], along[y1[ys] - lo], wy0[ys, None], wy1[ys, None]).astype(np.float32)


def _cells(index0: np.ndarray, index1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output samples grouped by the input pair they read: (first input, second input, group
    of each sample); i1 is a function of i0, so grouping by i0 suffices."""
    first, group = np.unique(index0, return_inverse=True)
    second = index1[np.searchsorted(index0, first)]
    return first, second, group


def upsample_to_crop(logits: np.ndarray, out_size: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """One (h, w) float32 logit map resized bilinearly to `out_size` = (H, W) and thresholded
    at 0 (`> 0`, SAM's processors' `mask_threshold`). Returns (crop, y, x): the (rows, cols)
    bool region of the (H, W) mask that can hold true pixels, placed at (y, x); a (0, 0) crop
    when none can.

    Output pixels whose four inputs are all above 0 are above 0, and all at or below 0 are not
    (a sum of products with non-negative weights keeps the sign): only the cells where the
    inputs' signs differ, along the mask's outline, are computed."""
    h, w = logits.shape
    H, W = out_size
    pos = logits > 0
    rows, cols = np.flatnonzero(pos.any(1)), np.flatnonzero(pos.any(0))
    if not len(rows):
        return np.zeros((0, 0), bool), 0, 0
    y0, y1 = axis_weights(h, H)[:2]
    x0, x1 = axis_weights(w, W)[:2]
    top, bottom = _span(y0, y1, rows[0], rows[-1])
    left, right = _span(x0, x1, cols[0], cols[-1])
    ry0, ry1, row_cell = _cells(y0[top:bottom], y1[top:bottom])
    cx0, cx1, col_cell = _cells(x0[left:right], x1[left:right])
    corners = [pos[np.ix_(r, c)] for r in (ry0, ry1) for c in (cx0, cx1)]
    inside = corners[0] & corners[1] & corners[2] & corners[3]
    mixed = (corners[0] | corners[1] | corners[2] | corners[3]) & ~inside
    crop = inside[row_cell][:, col_cell]
    starts = np.searchsorted(row_cell, np.arange(len(ry0) + 1))
    for g in np.flatnonzero(mixed.any(1)):
        a, b = int(starts[g]), int(starts[g + 1])
        picked = np.flatnonzero(mixed[g][col_cell])  # crop columns in this row band's mixed cells
        for c0 in range(0, len(picked), max(1, BAND_VALUES // max(1, b - a))):
            part = picked[c0: c0 + max(1, BAND_VALUES // max(1, b - a))]
            crop[a:b, part] = resize_window(logits, out_size, top + a, top + b, left + part) > 0
    return crop, top, left


def upsample_masks(logits, out_size: tuple[int, int]) -> list[tuple[np.ndarray, int, int]]:
    """(K, h, w) float32 low-resolution logits (torch tensor or numpy, any device) -> K masks
    of the (H, W) = `out_size` image as (crop, y, x) (see `upsample_to_crop`; a crop may hold
    empty borders), equal to `F.interpolate(mode="bilinear", align_corners=False) > 0`."""
    import torch
    import torch.nn.functional as F

    from ..instance_masks import tight_crop

    H, W = out_size
    values = torch.as_tensor(logits).detach().float().cpu()
    if H * W > DIRECT_PIXELS:
        return [upsample_to_crop(v.numpy(), out_size) for v in values]
    out = []
    group = max(1, DIRECT_VALUES // (H * W))
    for start in range(0, len(values), group):
        resized = F.interpolate(values[start: start + group, None], (H, W), mode="bilinear", align_corners=False)
        out += [tight_crop(m) for m in (resized[:, 0] > 0).numpy()]
    return out


__all__ = ["axis_weights", "resize_window", "upsample_masks", "upsample_to_crop"]
