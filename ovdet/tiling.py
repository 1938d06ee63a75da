"""Sliced inference: an image cut into overlapping tiles, the tiles batched through the model.

OWL and CLIP models see an image through 768-1008 px; resized whole, a 6000 px aerial photo's
cars are a pixel or two. Cut into tiles of `tile` px (each resized to the model's input), they
are large enough to find. Unlike SAHI's and supervision's slicers, which run one tile per
forward pass, ovdet sends the tiles of an image `batch_size` at a time, every class in the
same pass.

    windows = tile_windows(h, w, tile=640, overlap=0.2)     # (N, 4) int64 xyxy pixel windows
    dets = detect_tiled(image, predict, finalise, settings)  # Detections in image pixels

Each tile's candidates go through the detector's usual selection (threshold, NMS, top-k) in
tile pixels, move to image pixels, and `ovdet.merging` then merges the duplicates that
overlapping tiles (and the optional whole-image pass) create.

Masks (a masker's `segment`) are made per tile, on the tile's pixels: SAM sees a tile at its
1024 px input, where the objects tiling is for are large enough to outline (on the whole
20000 px image they would be a few pixels). They are made after merging, for the detections
kept (and the parts "nmm" merged into them) only, so memory follows the detections reported;
they move to image pixels, and a box that "nmm" merged from several tiles gets the union of
its parts' masks (an object cut by a tile edge is whole again); "nms" keeps the kept box's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .backends.base import RegionScores
from .instance_masks import Masks
from .merging import merge_passes
from .structures import Detections

# a box within this fraction of the tile side (at least 2 px) of an inner tile edge is "cut"
EDGE_FRACTION = 0.01


@dataclass(frozen=True)
class TileSettings:
    """The `tile*` keys of a DetectorConfig (see there)."""

    tile: int
    overlap: float = 0.2
    full_image: bool = False
    merge: str = "nmm"
    merge_iou: float = 0.5
    metric: str = "ios"

    @classmethod
    def from_config(cls, cfg) -> "TileSettings":
        return cls(cfg.tile, cfg.tile_overlap, cfg.tile_full_image, cfg.tile_merge, cfg.tile_merge_iou,
                   cfg.tile_merge_metric)


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:  # the last tile is shifted back to end at the border
        starts.append(length - size)
    return starts


def tile_windows(height: int, width: int, tile: int, overlap: float) -> np.ndarray:
    """(N, 4) int64 xyxy windows covering a `height` x `width` image, row by row.

    Tiles are `tile` px squares (the image's side where it is smaller), `round(tile * (1 -
    overlap))` px apart; the last row and column are shifted back to end at the image border
    rather than hang over it, so every tile has the same size.
    """
    th, tw = min(tile, height), min(tile, width)
    stride = max(1, tile - round(tile * overlap))
    return np.asarray([(x, y, x + tw, y + th) for y in _starts(height, th, stride) for x in _starts(width, tw, stride)],
                      dtype=np.int64)


def touches_inner_edge(xyxy: np.ndarray, window: np.ndarray, height: int, width: int, tolerance: float) -> np.ndarray:
    """(N,) bool: boxes (image pixels) within `tolerance` px of an edge of `window` that lies
    inside the image (not on its border): objects the tile may have cut."""
    x0, y0, x1, y1 = window.tolist()
    inner = np.asarray([x0 > 0, y0 > 0, x1 < width, y1 < height])
    near = np.stack([xyxy[:, 0] - x0 <= tolerance, xyxy[:, 1] - y0 <= tolerance,
                     x1 - xyxy[:, 2] <= tolerance, y1 - xyxy[:, 3] <= tolerance], 1)
    return (near & inner).any(1)


def detect_tiled(
    image: np.ndarray,
    predict: Callable[[Sequence[np.ndarray]], list[RegionScores]],
    finalise: Callable[[RegionScores], Detections],
    settings: TileSettings,
    batch_size: int,
    max_detections: int,
    class_agnostic: bool = False,
    segment: Callable[[np.ndarray, Detections], Detections] | None = None,
) -> Detections:
    """Detections of one image from its tiles (and the whole image with `full_image`).

    Args:
        image: (H, W, 3) RGB uint8.
        predict: the backend's candidates for a list of images (one forward pass per call).
        finalise: threshold + NMS + top-k of one image's candidates -> Detections (its pixels).
        settings: tile size, overlap and merging.
        batch_size: tiles per `predict` call: ceil(tiles / batch_size) calls in all (the whole
            image, with `full_image`, is one more input in the batches).
        max_detections: most detections kept after merging.
        class_agnostic: merge detections of different classes too.
        segment: (tile RGB uint8 (h, w, 3), its Detections in tile pixels) -> the same with
            masks; None = no masks. Called for tiles with detections only.
    Returns:
        Detections in image pixels, best score first.
    """
    height, width = image.shape[:2]
    windows = tile_windows(height, width, settings.tile, settings.overlap)
    whole = np.asarray([[0, 0, width, height]], dtype=np.int64)
    passes = np.concatenate([windows, whole]) if settings.full_image and len(windows) > 1 else windows
    tolerance = max(2.0, EDGE_FRACTION * settings.tile)
    parts: list[Detections] = []
    edges: list[np.ndarray] = []
    batches = math.ceil(len(passes) / batch_size)
    from .progress import progress_bar

    # tiles done / total on a large image only (more than 4 forward passes), on a terminal only
    with progress_bar(total=len(passes), desc="tiles", unit="tile", enabled=batches > 4, leave=False) as bar:
        for start in range(0, len(passes), batch_size):  # Ctrl-C is seen between batches
            chunk = passes[start : start + batch_size]
            crops = [image if (w == whole[0]).all() else np.ascontiguousarray(image[w[1] : w[3], w[0] : w[2]])
                     for w in chunk]
            for window, cand in zip(chunk, predict(crops)):
                dets = finalise(cand)
                masks = None if dets.masks is None else dets.masks.translate(int(window[0]), int(window[1]), (height, width))
                shift = np.asarray([window[0], window[1]] * 2, dtype=np.float32)
                xyxy = dets.xyxy + shift
                parts.append(replace(dets, xyxy=xyxy, image_size=(height, width), masks=masks))
                edges.append(touches_inner_edge(xyxy, window, height, width, tolerance))
            bar.update(len(chunk))
    found = Detections.concat(parts)
    pass_ids = np.repeat(np.arange(len(passes)), [len(p) for p in parts])
    if len(passes) == 1 or len(found) == 0:
        keep = np.argsort(-found.scores, kind="stable")[:max_detections]
        out, groups = found[keep], [np.asarray([i]) for i in keep]
    else:
        merged = merge_passes(found.xyxy, found.scores, found.class_ids, pass_ids, np.concatenate(edges), passes,
                              settings.merge, settings.metric, settings.merge_iou, class_agnostic)
        order = np.argsort(-found.scores[merged.keep], kind="stable")[:max_detections]
        out = replace(found[merged.keep[order]], xyxy=merged.xyxy[order])
        nmm = settings.merge == "nmm"
        groups = [np.asarray([merged.keep[k], *(merged.absorbed[k].tolist() if nmm else [])], np.int64) for k in order]
    if segment is not None and out.masks is None:
        masks = _tile_masks(image, found, np.unique(np.concatenate(groups + [np.zeros(0, np.int64)])), pass_ids, passes,
                            segment)
        out = replace(out, masks=Masks.concat([Masks.empty((height, width))] + [masks.union(g.tolist()) for g in groups]))
    elif out.masks is not None and len(passes) > 1 and settings.merge == "nmm":  # masks the backend made
        out = replace(out, masks=Masks.concat([Masks.empty((height, width))] + [found.masks.union(g.tolist()) for g in groups]))
    return out


def _tile_masks(image: np.ndarray, found: Detections, rows: np.ndarray, pass_ids: np.ndarray, passes: np.ndarray,
                segment: Callable[[np.ndarray, Detections], Detections]) -> Masks:
    """Masks of detections `rows` of `found` (image pixels), each made on its own pass's
    window by `segment`; rows not asked for get empty masks."""
    height, width = image.shape[:2]
    crops = [np.zeros((0, 0), bool)] * len(found)
    origins = np.zeros((len(found), 2), np.int64)
    for p in np.unique(pass_ids[rows]):
        x0, y0, x1, y1 = (int(v) for v in passes[p])
        members = rows[pass_ids[rows] == p]
        tile = np.ascontiguousarray(image[y0:y1, x0:x1])
        local = replace(found[members], xyxy=found.xyxy[members] - np.float32([x0, y0, x0, y0]), image_size=(y1 - y0, x1 - x0),
                        masks=None)
        masks = segment(tile, local).masks.translate(x0, y0, (height, width))
        for row, crop, origin in zip(members.tolist(), masks.crops, masks.origins):
            crops[row], origins[row] = crop, origin
    return Masks(tuple(crops), origins, (height, width))
