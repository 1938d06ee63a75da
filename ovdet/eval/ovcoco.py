"""Open-vocabulary COCO (OV-COCO): box AP50 on the 17 novel, 48 base and all 65 classes.

The split (Bansal et al. 2018, used by OVR-CNN, ViLD, RegionCLIP, Detic) ships with ovdet in
`ovdet/eval/data/ov_coco_split.json`, as standard COCO category ids and names. Scoring is one
COCOeval run over the 65 split classes (generalised setting: base and novel names are in the
vocabulary together); the 15 excluded classes take no part, neither as ground truth nor as
detections. AP50_novel / AP50_base are reduced from COCOeval's precision array exactly as
`COCOeval.summarize` would with `params.catIds` set to the novel / base ids, so they equal
pycocotools run on those ids alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

from .coco import COCO_KEYS, Evaluation, coco_curves, mean_ap, package_version, per_category_ap, run_cocoeval
from .dataset import AnnotationError, Dataset


@dataclass(frozen=True)
class OvCocoSplit:
    """Category id -> name for each part of the split."""

    base: dict[int, str]
    novel: dict[int, str]
    excluded: dict[int, str]

    @property
    def ids(self) -> list[int]:
        """The 65 evaluated category ids (base + novel), ascending."""
        return sorted([*self.base, *self.novel])


@lru_cache(maxsize=1)
def load_split() -> OvCocoSplit:
    """The standard 48/17 split shipped as package data."""
    text = resources.files("ovdet.eval").joinpath("data/ov_coco_split.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    part = lambda key: {int(c["id"]): str(c["name"]) for c in raw[key]}  # noqa: E731
    return OvCocoSplit(base=part("base"), novel=part("novel"), excluded=part("excluded"))


def check_split(dataset: Dataset, split: OvCocoSplit) -> None:
    """The annotations must carry the 65 split classes under their standard COCO ids."""
    names = dataset.category_names()
    for cat_id, expected in sorted({**split.base, **split.novel}.items()):
        if cat_id not in names:
            raise AnnotationError(
                f"{dataset.path.name} has no category id {cat_id} ({expected!r}): OV-COCO needs the standard COCO "
                "category ids (use --protocol coco for other datasets)"
            )
        if names[cat_id] != expected:
            raise AnnotationError(
                f"{dataset.path.name}: category id {cat_id} is {names[cat_id]!r}, the OV-COCO split expects "
                f"{expected!r} (not standard COCO ids)"
            )


def _ap50(precision5, columns: Sequence[int]) -> float:
    # (R, K') at IoU 0.50, area "all", 100 detections: the same elements in the same order as
    # summarize() would average with catIds restricted to `columns`, so the float sum matches.
    return mean_ap(precision5[0, :, :, 0, -1][:, list(columns)])


def evaluate_ov_coco(dataset: Dataset, results: Sequence[dict], image_ids: Iterable[int] | None = None,
                     iou_type: str = "bbox") -> Evaluation:
    """AP50_novel, AP50_base, AP50_all (+ the COCO summary over the 65 classes).

    Args:
        dataset: COCO annotations with standard category ids (instances_val2017.json or a
            subset of its images); other categories in the file are ignored.
        results: COCO results, bbox = [x, y, w, h]; detections of excluded classes are ignored.
        image_ids: evaluated images (default: all).
        iou_type: "bbox" (box AP) or "segm" (mask AP; results with "segmentation" RLEs).
    """
    split = load_split()
    check_split(dataset, split)
    ev = run_cocoeval(dataset, results, image_ids, split.ids, iou_type)
    precision = ev.eval["precision"]
    column = {cat_id: k for k, cat_id in enumerate(ev.params.catIds)}
    novel = [column[c] for c in sorted(split.novel)]
    base = [column[c] for c in sorted(split.base)]

    metrics = {
        "protocol": "ov-coco",
        "iou_type": iou_type,
        "AP50_novel": _ap50(precision, novel),
        "AP50_base": _ap50(precision, base),
        "AP50_all": _ap50(precision, list(range(len(ev.params.catIds)))),
    }
    metrics.update({key: float(value) for key, value in zip(COCO_KEYS, ev.stats)})  # over the 65 classes
    metrics["num_images"] = len(ev.params.imgIds)
    metrics["num_categories"] = len(ev.params.catIds)
    metrics["split"] = f"{len(split.base)} base / {len(split.novel)} novel classes (OVR-CNN, ViLD, Detic)"
    metrics["evaluator"] = f"pycocotools {package_version('pycocotools')} COCOeval ({iou_type}) over the 65 OV-COCO classes"
    table = per_category_ap(ev, dataset)
    for entry in table.values():
        entry["split"] = "novel" if entry["id"] in split.novel else "base"
    metrics["per_category"] = table

    curves = {}
    for label, cols in (("novel", novel), ("base", base), ("all", None)):
        curves.update({f"{label} {k}": v for k, v in coco_curves(precision, cols).items() if k == "IoU=0.50"})
    return Evaluation(metrics=metrics, curves=curves, recall=ev.params.recThrs)
