"""Box geometry in numpy: formats, image clipping, user-box checks, square crops, sliding
windows and NMS. Torch-free, so an ONNX export runs without torch; the torch backends use the
same functions where the work is per box on the CPU anyway (crops, windows, box checks).

Formats: `xyxy` = x1, y1, x2, y2; `cxcywh` = centre x, centre y, width, height; pixels of the
original image unless a docstring says "normalised" (divided by a reference width/height).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import OvdetError

CLIP_MEAN_RGB = (122, 116, 104)  # padding colour: CLIP's normalisation mean, i.e. "zero" input


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) cxcywh -> (..., 4) xyxy, same units and dtype."""
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def clip_to_image(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., 4) xyxy pixels clipped to [0, width] x [0, height] (a copy)."""
    out = np.array(boxes, copy=True)
    out[..., 0::2] = np.clip(out[..., 0::2], 0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0, height)
    return out


def normalised_to_pixels(boxes: np.ndarray, height: int, width: int, pads_to_square: bool) -> np.ndarray:
    """(P, 4) normalised cxcywh of an OWL box head -> (P, 4) xyxy pixels of the original
    `height` x `width` image, clipped to it. OWLv2 (`pads_to_square`) boxes are relative to
    the padded square of side max(h, w); OWL-ViT's to the image itself."""
    xyxy = cxcywh_to_xyxy(boxes.astype(np.float32))
    ref_w, ref_h = (max(height, width),) * 2 if pads_to_square else (width, height)
    return clip_to_image(xyxy * np.asarray([ref_w, ref_h, ref_w, ref_h], np.float32), height, width)


def large_enough(boxes: np.ndarray, height: int, width: int, min_size: float = 1.0) -> np.ndarray:
    """Boolean (N,) mask of xyxy boxes at least `min_size` px wide and high after clipping."""
    b = clip_to_image(np.asarray(boxes, np.float32), height, width)
    return ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)


def check_boxes(boxes, height: int, width: int) -> np.ndarray:
    """User-supplied boxes for one image -> (N, 4) float32 xyxy clipped to the image.

    Raises `OvdetError` for malformed boxes (wrong shape, x2 <= x1, outside the image)."""
    try:
        arr = np.asarray(boxes, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise OvdetError(f"boxes must be a list of [x1, y1, x2, y2] numbers: {exc}") from exc
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise OvdetError(f"boxes must be a list of [x1, y1, x2, y2] numbers, got shape {arr.shape}")
    bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
    if bad.any():
        raise OvdetError(f"box {arr[bad][0].tolist()} has x2 <= x1 or y2 <= y1 (boxes are [x1, y1, x2, y2] pixels)")
    outside = ~large_enough(arr, height, width)
    if outside.any():
        raise OvdetError(f"box {arr[outside][0].tolist()} lies outside the {width}x{height} image")
    # boxes reaching past the border are scored (and reported) as their part inside the image
    return clip_to_image(arr, height, width)


def square_geometry(box: Sequence[float], context: float = 1.0) -> tuple[int, int, int]:
    """(left, top, side) in pixels of the square cut around an xyxy box: side = max(w, h) *
    context (at least 1 px), centred on the box, rounded to whole pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(round(max(x2 - x1, y2 - y1) * context)), 1)
    return int(round((x1 + x2) / 2 - side / 2)), int(round((y1 + y2) / 2 - side / 2)), side


def square_crops(image: np.ndarray, boxes, context: float = 1.0) -> list[np.ndarray]:
    """Square crops around boxes.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) xyxy pixels (numpy array, torch tensor or nested list).
        context: the square's side is max(box w, box h) * context, centred on the box.
    Returns:
        N arrays (S_i, S_i, 3) uint8; parts outside the image are CLIP's mean colour.
    """
    h, w = image.shape[:2]
    crops = []
    for box in (boxes.tolist() if hasattr(boxes, "tolist") else boxes):
        left, top, side = square_geometry(box, context)
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = CLIP_MEAN_RGB
        sx0, sy0 = max(left, 0), max(top, 0)
        sx1, sy1 = min(left + side, w), min(top + side, h)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - top : sy1 - top, sx0 - left : sx1 - left] = image[sy0:sy1, sx0:sx1]
        crops.append(canvas)
    return crops


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (S, S, 3), S = max(H, W), padded at the bottom/right with CLIP's mean."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = CLIP_MEAN_RGB
    out[:h, :w] = image
    return out


def window_boxes(height: int, width: int, scales: Sequence[float], ratios: Sequence[float], overlap: float) -> np.ndarray:
    """(N, 4) float32 xyxy multi-scale sliding windows covering a `height` x `width` image:
    the whole image first, then for each scale (fraction of the shorter side) and aspect
    ratio (width / height) a grid with `overlap`, centred so both edges are reached."""
    boxes = [[0.0, 0.0, float(width), float(height)]]
    short = min(height, width)
    for scale in scales:
        for ratio in ratios:
            bw = min(width, short * scale * ratio**0.5)
            bh = min(height, short * scale / ratio**0.5)
            xs = np.arange(0, max(width - bw, 0) + 1e-6, max(bw * (1 - overlap), 1.0))
            ys = np.arange(0, max(height - bh, 0) + 1e-6, max(bh * (1 - overlap), 1.0))
            xs = xs + (width - bw - xs[-1]) / 2
            ys = ys + (height - bh - ys[-1]) / 2
            boxes += [[x, y, x + bw, y + bh] for y in ys for x in xs]
    return np.asarray(boxes, dtype=np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with (N, 4) boxes -> (N,), as torchvision computes it."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy NMS, torchvision's `nms` / `batched_nms` in numpy.

    Args:
        boxes: (N, 4) xyxy; scores: (N,); iou: a box whose IoU with a higher-scored kept box
            of its group exceeds this is dropped; groups: (N,) ints, boxes only suppress
            boxes of their own group (classes); None = one group.
    Returns:
        (K,) int64 indices of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes, np.float32)
    if groups is not None and len(boxes) <= 4000:
        # torchvision's batched_nms on CPUs up to 4,000 boxes: groups moved apart by offsetting
        # the coordinates, then one NMS. The offset changes float32 rounding of the IoUs, and
        # boxes at an IoU right at the threshold (sliding windows) are kept or dropped as there
        offsets = groups.astype(np.float32) * (boxes.max() + np.float32(1))
        boxes, groups = boxes + offsets[:, None], None
    order = np.argsort(-np.asarray(scores), kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        rest = ~suppressed
        if groups is not None:
            rest &= groups == groups[i]
        cand = np.nonzero(rest)[0]
        # float32 IoU against the float64 threshold, as torchvision's kernel compares: an IoU
        # of float32(0.3) is above 0.3 (numpy would compare in float32 and call it equal)
        over = cand[box_iou(boxes[i], boxes[cand]).astype(np.float64) > float(iou)]
        suppressed[over] = True
    return np.asarray(keep, dtype=np.int64)
