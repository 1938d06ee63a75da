"""Training augmentations on (image, boxes, labels): horizontal flips, random crops, 2 x 2 mosaics.

Every function takes its randomness from a `numpy.random.Generator` it is given, so the sample
at a position of the data stream is a pure function of (seed, position): a resumed run and a
run split over DDP processes see exactly the same augmented images.

Images are RGB uint8 (H, W, 3); boxes (N, 4) float32 xyxy pixels of that image; labels (N,).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

AUGMENTS = ("flip", "crop", "mosaic")
# a crop keeps a box when at least this fraction of its area stays inside
MIN_KEPT_AREA = 0.3
MIN_SIDE_PX = 2.0


def parse_augments(spec: str) -> tuple[str, ...]:
    """"flip,crop,mosaic" | "none" -> the augmentations asked for (unknown names: ValueError)."""
    names = tuple(n.strip() for n in spec.split(",") if n.strip() and n.strip() != "none")
    bad = [n for n in names if n not in AUGMENTS]
    if bad:
        raise ValueError(f"--augment: unknown {bad[0]!r} (choose from {', '.join(AUGMENTS)}, or none)")
    return names


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out


def crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, window: Sequence[int]):
    """Cut `window` = (x1, y1, x2, y2) integer pixels; boxes are clipped to it and those with
    less than `MIN_KEPT_AREA` of their area (or under 2 px a side) left are dropped."""
    x1, y1, x2, y2 = window
    shifted = boxes - np.array([x1, y1, x1, y1], np.float32)
    clipped = np.clip(shifted, 0, [x2 - x1, y2 - y1, x2 - x1, y2 - y1]).astype(np.float32)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    keep = (area(clipped) >= MIN_KEPT_AREA * np.maximum(area(boxes), 1e-6)) \
        & (clipped[:, 2] - clipped[:, 0] >= MIN_SIDE_PX) & (clipped[:, 3] - clipped[:, 1] >= MIN_SIDE_PX)
    return np.ascontiguousarray(image[y1:y2, x1:x2]), clipped[keep], labels[keep]


def random_crop(image, boxes, labels, rng: np.random.Generator, min_scale: float = 0.5):
    """A random window of `min_scale`..1 of each side."""
    h, w = image.shape[:2]
    cw, ch = (max(1, int(round(s * rng.uniform(min_scale, 1.0)))) for s in (w, h))
    x1, y1 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return crop(image, boxes, labels, (x1, y1, x1 + cw, y1 + ch))


def mosaic(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Four (image, boxes, labels) -> one 2 x 2 mosaic: each image scaled to fit a cell of side
    max(h, w) of the largest, top-left aligned in its cell; the rest is mid-grey."""
    import cv2

    cell = max(max(im.shape[:2]) for im, _, _ in parts)
    canvas = np.full((2 * cell, 2 * cell, 3), 114, np.uint8)
    all_boxes, all_labels = [], []
    for k, (im, boxes, labels) in enumerate(parts):
        s = cell / max(im.shape[:2])
        nh, nw = max(1, int(round(im.shape[0] * s))), max(1, int(round(im.shape[1] * s)))
        ox, oy = (k % 2) * cell, (k // 2) * cell
        canvas[oy:oy + nh, ox:ox + nw] = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        all_boxes.append(boxes * np.float32(s) + np.array([ox, oy, ox, oy], np.float32))
        all_labels.append(labels)
    return canvas, np.concatenate(all_boxes).astype(np.float32).reshape(-1, 4), np.concatenate(all_labels)


def augment(load: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]], index: int, num_samples: int,
            rng: np.random.Generator, augments: Sequence[str], mosaic_p: float = 0.25, crop_p: float = 0.5,
            flip_p: float = 0.5):
    """The augmented sample `index`: `load(i)` -> (image, boxes, labels) of sample i; a mosaic
    (probability `mosaic_p`) takes three more samples drawn by `rng`, then a random crop
    (`crop_p`) and a flip (`flip_p`) apply to the result."""
    if "mosaic" in augments and num_samples > 1 and rng.random() < mosaic_p:
        others = rng.integers(0, num_samples, size=3).tolist()
        image, boxes, labels = mosaic([load(i) for i in [index, *others]])
    else:
        image, boxes, labels = load(index)
    if "crop" in augments and rng.random() < crop_p:
        image, boxes, labels = random_crop(image, boxes, labels, rng)
    if "flip" in augments and rng.random() < flip_p:
        image, boxes = hflip(image, boxes)
    return image, boxes, labels


__all__ = ["AUGMENTS", "augment", "crop", "hflip", "mosaic", "parse_augments", "random_crop"]
