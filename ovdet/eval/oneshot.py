"""One-shot detection protocol (`ovdet eval --protocol coco --one-shot`).

Each category is queried by ONE image exemplar: a ground-truth box of that category taken, with
a seeded random choice, from another image of the same annotation file (the image-conditioned
protocol of the OWL-ViT paper, with one query per class). When a target image is the source of
a category's exemplar, that image is queried with a second exemplar drawn from yet another
image, so no image is ever shown its own object. Categories whose boxes all lie in one image
cannot be queried that way; they are left out of the vocabulary and of the scores (and named).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..exemplars import Example
from .dataset import Dataset
from .categories import prompt_name
from .runner import image_path

# boxes narrower or shorter than this (pixels) show too little of the object to be a query
MIN_EXEMPLAR_SIDE = 8.0


@dataclass
class OneShotVocabulary:
    """Per category one exemplar (and an alternate from another image).

    categories: the queried category dicts, by id; `names` their class names.
    Call it with an image dict to get that image's vocabulary: one `Example` per category.
    """

    categories: list[dict]
    primary: list[tuple[Example, dict]]
    alternate: list[tuple[Example, dict]]
    excluded: list[dict]
    seed: int
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(prompt_name(c["name"]) for c in self.categories)

    @property
    def category_ids(self) -> list[int]:
        return [c["id"] for c in self.categories]

    def __call__(self, image: dict) -> tuple[Example, ...]:
        swapped = tuple(k for k, (_, ann) in enumerate(self.primary) if ann["image_id"] == image["id"])
        if swapped not in self._memo:  # one tuple per distinct choice: detect_batch groups by it
            self._memo[swapped] = tuple(
                (self.alternate if k in swapped else self.primary)[k][0] for k in range(len(self.primary))
            )
        return self._memo[swapped]

    def record(self) -> dict:
        """JSON-able: which annotations were drawn (metrics.json, resume checks)."""
        return {
            "seed": self.seed,
            "exemplars": [
                {"category_id": cat["id"], "annotation_id": p["id"], "image_id": p["image_id"],
                 "alternate_annotation_id": a["id"], "alternate_image_id": a["image_id"]}
                for cat, (_, p), (_, a) in zip(self.categories, self.primary, self.alternate)
            ],
            "excluded_category_ids": [c["id"] for c in self.excluded],
        }


def one_shot_vocabulary(dataset: Dataset, categories: Sequence[dict], images_dir: str | Path,
                        seed: int = 0) -> OneShotVocabulary:
    """Draw the exemplars for `categories` from the annotated images present in `images_dir`.

    Candidates are non-crowd boxes at least `MIN_EXEMPLAR_SIDE` pixels wide and high; the draw
    depends only on the annotations and `seed` (annotations sorted by id, one RNG per category).
    """
    images_dir = Path(images_dir)
    paths = {}
    for image in dataset.images:
        path = image_path(images_dir, image)
        if path.is_file():
            paths[image["id"]] = path
    by_category: dict[int, list[dict]] = {}
    for ann in sorted(dataset.data.get("annotations", []), key=lambda a: a["id"]):
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or ann["image_id"] not in paths or min(w, h) < MIN_EXEMPLAR_SIDE:
            continue
        by_category.setdefault(ann["category_id"], []).append(ann)
    kept, primary, alternate, excluded = [], [], [], []
    for cat in categories:
        pool = list(by_category.get(cat["id"], []))
        random.Random(f"{seed}/{cat['id']}").shuffle(pool)
        first = pool[0] if pool else None
        second = next((a for a in pool if first is not None and a["image_id"] != first["image_id"]), None)
        if second is None:
            excluded.append(cat)
            continue
        name = prompt_name(cat["name"])
        kept.append(cat)
        for ann, out in ((first, primary), (second, alternate)):
            x, y, w, h = ann["bbox"]
            out.append((Example(name, str(paths[ann["image_id"]]), (x, y, x + w, y + h)), ann))
    return OneShotVocabulary(kept, primary, alternate, excluded, seed)
