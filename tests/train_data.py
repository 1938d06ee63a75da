"""A synthetic detection set for the training tests: coloured shapes on noise, named like
"red square", written as COCO files with PNG images beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230), "yellow": (235, 220, 30)}


def draw_shape(image: np.ndarray, shape: str, colour: tuple[int, int, int], box: Sequence[int]) -> None:
    import cv2

    x1, y1, x2, y2 = box
    if shape == "square":
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=-1)
    elif shape == "circle":
        cv2.circle(image, ((x1 + x2) // 2, (y1 + y2) // 2), (x2 - x1) // 2, colour, thickness=-1)
    else:  # triangle
        pts = np.array([[(x1 + x2) // 2, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]], np.int32)
        cv2.fillPoly(image, [pts], colour)


def make_split(folder: Path, name: str, classes: Sequence[str], num_images: int, seed: int, size: int = 96,
               categories: Sequence[str] | None = None) -> Path:
    """`num_images` PNGs with 1-2 shapes of `classes` each, and `<name>.json` (COCO) listing
    `categories` (default `classes`) with ids 1..K."""
    import cv2

    rng = np.random.default_rng(seed)
    categories = list(categories or classes)
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        image = rng.integers(60, 140, size=(size, size, 3), dtype=np.uint8)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 3))):
            cls = classes[int(rng.integers(len(classes)))]
            colour, shape = cls.split()
            for _try in range(20):
                side = int(rng.integers(size // 4, size // 2))
                x1, y1 = (int(v) for v in rng.integers(0, size - side, size=2))
                box = (x1, y1, x1 + side, y1 + side)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                    break
            else:
                continue
            placed.append(box)
            draw_shape(image, shape, COLOURS[colour], box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": categories.index(cls) + 1,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                         "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": 0})
        file = f"{name}_{i:03d}.png"
        cv2.imwrite(str(folder / file), image[:, :, ::-1])
        images.append({"id": i + 1, "file_name": file, "width": size, "height": size})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(categories)]
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path
