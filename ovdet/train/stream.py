"""The data stream: which augmented image, with which queries, at each position of training.

Epoch e visits the samples in a permutation seeded by (seed, e); positions run on across
epochs, and step s takes the global batch of positions [s * G, (s + 1) * G). Everything about
position k (its augmentation, its negative names, its prompt templates) comes from a
generator seeded by (seed, k). So the stream is a pure function of the seed: a resumed run
needs only the step number, and DDP process r of W takes its slice of each global batch and
sees exactly what a single process would.

Queries of an image: the C trained classes (always: annotations are exhaustive for them, so an
absent class is a negative) then `num_negatives` names drawn from the generic vocabulary,
each class name put in a random prompt template (`TEMPLATES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..text import TEMPLATE_SETS
from .augment import augment
from .data import TrainData
from .vocab import GENERIC_NAMES

TEMPLATES = TEMPLATE_SETS["photo"]


@dataclass(frozen=True)
class StreamItem:
    """One augmented image: `image` RGB uint8 (H, W, 3); `boxes` (N, 4) xyxy pixels of it;
    `labels` (N,) trained-class indices; `prompts` (C + K,) the query prompts, the C trained
    classes first; `position`: where in the stream it is."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    prompts: tuple[str, ...]
    position: int


class Stream:
    def __init__(self, data: TrainData, global_batch: int, seed: int, augments: Sequence[str] = (),
                 num_negatives: int = 50, exclude: Sequence[str] = (), templates: Sequence[str] = TEMPLATES):
        self.data, self.global_batch, self.seed = data, global_batch, seed
        self.augments, self.templates = tuple(augments), tuple(templates)
        banned = {n.casefold() for n in (*data.classes, *exclude)}
        self.pool = tuple(n for n in GENERIC_NAMES if n.casefold() not in banned)
        self.num_negatives = min(num_negatives, len(self.pool))
        self._perm = lru_cache(maxsize=4)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.data))

    def sample_index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.data))
        return int(self._perm(epoch)[offset])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from ..io import read_image

        sample = self.data.samples[index]
        return read_image(sample.path).array, sample.boxes.copy(), sample.labels.copy()

    def item(self, position: int) -> StreamItem:
        rng = np.random.default_rng([self.seed, position])
        image, boxes, labels = augment(self.load, self.sample_index(position), len(self.data), rng, self.augments)
        negatives = [self.pool[i] for i in rng.choice(len(self.pool), size=self.num_negatives, replace=False)]
        names = [*self.data.classes, *negatives]
        picks = rng.integers(0, len(self.templates), size=len(names))
        prompts = tuple(self.templates[t].replace("{}", n) for t, n in zip(picks, names))
        return StreamItem(image, boxes, labels, prompts, position)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> list[StreamItem]:
        """Process `rank`'s share of global batch `step` (contiguous, G / W positions)."""
        per = self.global_batch // world
        start = step * self.global_batch + rank * per
        return [self.item(k) for k in range(start, start + per)]


__all__ = ["Stream", "StreamItem", "TEMPLATES"]
