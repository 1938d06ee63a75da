"""The labelled dataset the exporters write: images with boxes, unique export names, splits.

Everything here is a function of the set of records, never of the order they were computed
in: images are sorted by path, names are made unique in that order, and the split is a seeded
permutation of that sorted list (exact fractions), so both engines and any resume give the
same dataset.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import OvdetError
from ..records import detections_from_image_record
from ..structures import Detections

SPLIT_NAMES = ("train", "val", "test")  # the keys ultralytics' data.yaml understands


class SplitError(OvdetError, ValueError):
    """A --split specification that is malformed or does not sum to 1."""


@dataclass(frozen=True)
class LabelledImage:
    """One exported image.

    path: the source file (absolute); name: its file name in the export (unique by stem);
    detections: its `Detections` over the ontology's classes (xyxy pixels of the image as the
    detector saw it, EXIF orientation applied); split: "train" | "val" | "test".
    """

    path: str
    name: str
    detections: Detections
    split: str = "train"

    @property
    def width(self) -> int:
        return self.detections.image_size[1]

    @property
    def height(self) -> int:
        return self.detections.image_size[0]

    @property
    def xyxy(self) -> np.ndarray:
        return self.detections.xyxy

    @property
    def scores(self) -> np.ndarray:
        return self.detections.scores

    @property
    def class_ids(self) -> np.ndarray:
        return self.detections.class_ids

    @property
    def masks(self):
        """The detections' `ovdet.instance_masks.Masks` (tight crops), or None without masks."""
        return self.detections.masks

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def to_supervision(self):
        """`supervision.Detections` (boxes, classes, scores) for supervision's dataset writers:
        without masks, which the exporters write from the crops themselves (supervision's
        would take an (N, H, W) array, and its writers turn masks into polygons)."""
        return self.detections.replace(masks=None).to_supervision()


def parse_split(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """"train=0.8,val=0.2" (or a dict) -> {"train": 0.8, "val": 0.2}; None -> {"train": 1.0}."""
    if text is None or text == "":
        return {"train": 1.0}
    if isinstance(text, Mapping):
        items = [(str(k), v) for k, v in text.items()]
    else:
        items = []
        for part in str(text).split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise SplitError(f"--split: expected NAME=FRACTION pairs such as train=0.8,val=0.2, got {part!r}")
            items.append((name.strip(), value.strip()))
    fractions: dict[str, float] = {}
    for name, value in items:
        if name not in SPLIT_NAMES:
            raise SplitError(f"--split: unknown split {name!r} (use {', '.join(SPLIT_NAMES)})")
        if name in fractions:
            raise SplitError(f"--split: {name} is given twice")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise SplitError(f"--split: {name}={value!r} is not a number") from None
        if not 0.0 < f <= 1.0 or math.isnan(f):
            raise SplitError(f"--split: {name}={value} must be in (0, 1]")
        fractions[name] = f
    if "train" not in fractions:
        raise SplitError("--split: a train split is required (e.g. train=0.8,val=0.2)")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"--split fractions sum to {total:g}, not 1: {', '.join(f'{k}={v:g}' for k, v in fractions.items())}")
    return fractions


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Image count per split: floors, then the remainders by largest fraction (ties: order given)."""
    raw = {k: n * f for k, f in fractions.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: -(raw[k] - counts[k]))[:rest]:
        counts[k] += 1
    return counts


def assign_splits(keys: Sequence[str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """{key: split}: a permutation of the SORTED keys drawn from `seed`, cut at exact counts."""
    ordered = sorted(keys)
    order = np.random.default_rng(seed).permutation(len(ordered))
    out: dict[str, str] = {}
    start = 0
    for name, count in split_counts(len(ordered), fractions).items():
        for i in order[start : start + count]:
            out[ordered[i]] = name
        start += count
    return out


def unique_names(paths: Iterable[str]) -> dict[str, str]:
    """{path: export file name}: the base name, with _1, _2... added when a stem is taken (by
    stem, case-insensitively: a.jpg and a.png would share a.txt / a.xml, and some file systems
    fold case)."""
    used: set[str] = set()
    names = {}
    for path in sorted(paths):
        p = Path(path)
        stem = re.sub(r"\s+", "_", p.stem) or "image"  # YOLO/VOC lists are split on white space
        candidate, k = stem, 1
        while candidate.casefold() in used:
            candidate, k = f"{stem}_{k}", k + 1
        used.add(candidate.casefold())
        names[path] = candidate + p.suffix.lower()
    return names


def build_images(records: Iterable[dict], classes: Sequence[str], fractions: Mapping[str, float],
                 seed: int) -> list[LabelledImage]:
    """Readable Image records (see `work`) over `classes` -> `LabelledImage`s sorted by path,
    named and split."""
    good = sorted((r for r in records if "error" not in r), key=lambda r: r["image"])
    names = unique_names(r["image"] for r in good)
    splits = assign_splits([r["image"] for r in good], fractions, seed)
    return [LabelledImage(path=r["image"], name=names[r["image"]], split=splits[r["image"]],
                          detections=detections_from_image_record(r, classes, source="label shards"))
            for r in good]
