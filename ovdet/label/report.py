"""`DIR/report.json` (what was labelled, how, and what came out) and `DIR/review.jpg` (a
contact sheet of random annotated images for a quick look before training on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .dataset import SPLIT_NAMES, LabelledImage

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def class_statistics(images: Sequence[LabelledImage], classes: Sequence[str]) -> dict[str, dict]:
    """Per class: boxes, images with at least one, score min / quantiles / max."""
    stats = {}
    for k, name in enumerate(classes):
        scores = np.concatenate([im.scores[im.class_ids == k] for im in images]) if images else np.zeros(0)
        entry: dict[str, Any] = {"boxes": int(len(scores)),
                                 "images": int(sum(bool((im.class_ids == k).any()) for im in images))}
        if len(scores):
            q = np.quantile(scores, QUANTILES)
            entry["score"] = {"min": round(float(scores.min()), 5),
                              **{f"p{int(p * 100)}": round(float(v), 5) for p, v in zip(QUANTILES, q)},
                              "max": round(float(scores.max()), 5)}
        stats[name] = entry
    return stats


def build_report(images: Sequence[LabelledImage], skipped: Mapping[str, str], classes: Sequence[str],
                 settings: Mapping[str, Any], model: Mapping[str, Any], run: Mapping[str, Any]) -> dict:
    """The report.json payload.

    images: the exported images; skipped: {path: reason} of unreadable ones; settings: the
    options of the run (ontology, formats, split...); model: the detector config; run: engine,
    timings and counts (computed / resumed images).
    """
    per_split = {name: n for name in SPLIT_NAMES if (n := sum(im.split == name for im in images))}
    return {
        "images": len(images),
        "skipped": len(skipped),
        "skipped_images": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "boxes": int(sum(len(im.scores) for im in images)),
        "images_without_boxes": int(sum(len(im.scores) == 0 for im in images)),
        "splits": per_split,
        "classes": class_statistics(images, classes),
        "settings": dict(settings),
        "model": dict(model),
        "run": dict(run),
    }


def _tile(image_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit an image into a (w, h) tile, letterboxed on grey, keeping its aspect ratio."""
    import cv2

    tw, th = size
    h, w = image_rgb.shape[:2]
    s = min(tw / w, th / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    tile = np.full((th, tw, 3), 114, np.uint8)
    x, y = (tw - nw) // 2, (th - nh) // 2
    tile[y : y + nh, x : x + nw] = cv2.resize(image_rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return tile


def review_sheet(images: Sequence[LabelledImage], classes: Sequence[str], count: int, seed: int, path: Path,
                 tile: tuple[int, int] = (480, 360)) -> list[str]:
    """Draw `count` images picked at random (seeded) with their boxes, in a grid, to `path`
    (JPEG). Returns the paths shown."""
    from ..draw import annotate, save_image
    from ..io import load_image

    if count <= 0 or not images:
        return []
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(images), size=min(count, len(images)), replace=False).tolist())
    tiles = []
    for i in picked:
        im = images[i]
        tiles.append(_tile(annotate(load_image(im.path), im.detections), tile))
    cols = max(1, int(np.ceil(np.sqrt(len(tiles)))))
    rows = int(np.ceil(len(tiles) / cols))
    sheet = np.full((rows * tile[1], cols * tile[0], 3), 255, np.uint8)
    for j, t in enumerate(tiles):
        r, c = divmod(j, cols)
        sheet[r * tile[1] : (r + 1) * tile[1], c * tile[0] : (c + 1) * tile[0]] = t
    save_image(sheet, Path(path))
    return [images[i].path for i in picked]
