"""A contact sheet of search hits: one tile per hit (its image scaled to fit, the hit's box
drawn with `ovdet.draw`, labelled with class and score), in a grid, written as PNG or JPEG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .search import Hit

TILE = 256  # pixels per tile side
COLUMNS = 5


def hit_tile(hit: Hit, image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """(H, W, 3) RGB uint8 image of `hit` -> (tile, tile, 3) RGB: scaled to fit, centred on a
    grey square, the box and its label drawn."""
    import cv2

    from ..draw import annotate
    from ..structures import Detections

    h, w = image.shape[:2]
    f = tile / max(h, w)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    dets = Detections(xyxy=np.asarray([hit.box], np.float32) * f, scores=np.asarray([hit.score], np.float32),
                      class_ids=np.zeros(1, np.int64), class_names=(hit.class_name,), image_size=small.shape[:2])
    drawn = annotate(small, dets)
    out = np.full((tile, tile, 3), 128, np.uint8)
    y, x = (tile - drawn.shape[0]) // 2, (tile - drawn.shape[1]) // 2
    out[y:y + drawn.shape[0], x:x + drawn.shape[1]] = drawn
    return out


def contact_sheet(hits: Sequence[Hit], path: str | Path, columns: int = COLUMNS, tile: int = TILE) -> Path | None:
    """Write the tiles of `hits` (best first, row by row) to `path`; None when there are no
    hits. Images that can no longer be read get a grey tile."""
    from ..draw import save_image
    from ..errors import ImageReadError
    from ..io import load_image

    if not hits:
        return None
    cols = min(columns, len(hits))
    sheet = np.full((math.ceil(len(hits) / cols) * tile, cols * tile, 3), 255, np.uint8)
    cache: dict[str, np.ndarray | None] = {}
    for k, hit in enumerate(hits):
        if hit.path not in cache:
            try:
                cache[hit.path] = load_image(hit.path)
            except ImageReadError:
                cache[hit.path] = None
        image = cache[hit.path]
        r, c = divmod(k, cols)
        tile_img = hit_tile(hit, image, tile) if image is not None else np.full((tile, tile, 3), 128, np.uint8)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = tile_img
    save_image(sheet, Path(path))
    return Path(path)
