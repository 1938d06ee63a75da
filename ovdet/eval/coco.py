"""COCO box and mask AP through pycocotools' COCOeval, unchanged: the numbers are pycocotools' own.

ovdet only feeds it (annotations and results as built by the COCO API itself), restricts it to
the evaluated images / categories, and reads its arrays back:
  - `COCOeval.stats` (12 numbers) -> AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
    fractions in [0, 1], -1 where undefined (no ground truth in that slice);
  - `COCOeval.eval["precision"]`, shape (T=10 IoU thresholds, R=101 recall points, K categories,
    A=4 area ranges, M=3 max-detection settings) -> per-category AP and precision-recall curves.

Mask AP (iou_type "segm") scores the results' "segmentation" RLEs against the annotations'
masks. The results go to `COCO.loadRes` without their "bbox": loadRes would otherwise take
each detection's area (the small / medium / large split) from its box instead of its mask;
detectron2 and mmdetection drop the box for the same reason (AP over all areas is the same).
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .dataset import Dataset

IOU_TYPES = ("bbox", "segm")
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class Evaluation:
    """What a protocol returns.

    Attributes:
        metrics: the metrics.json payload: summary numbers (fractions, -1 = undefined),
            "protocol", "num_images", "evaluator", and "per_category" =
            {name: {"id", "AP", "AP50", "num_gt"}}.
        curves: label -> (R,) mean precision at the recall points in `recall`, averaged over
            the categories that have ground truth (for the precision-recall plot).
        recall: (R,) recall thresholds, 0.00 to 1.00 in steps of 0.01.
    """

    metrics: dict[str, Any]
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    recall: np.ndarray = field(default_factory=lambda: np.linspace(0.0, 1.0, 101))


@contextlib.contextmanager
def quiet():
    """pycocotools prints progress ("index created!") to stdout; keep the report clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_gt(dataset: Dataset):
    """A `pycocotools.coco.COCO` built from the parsed file (no second read from disk).

    Annotation dicts are shallow copies because COCOeval writes "ignore" into them.
    """
    from pycocotools.coco import COCO

    gt = COCO()
    data = dict(dataset.data)
    data["annotations"] = [dict(ann) for ann in dataset.data["annotations"]]
    gt.dataset = data
    with quiet():
        gt.createIndex()
    return gt


def scored_results(results: Sequence[dict], iou_type: str = "bbox") -> list[dict]:
    """Copies of the results as the evaluators are given them (they write into the dicts):
    for "segm" without "bbox", so that areas are the masks' (see the module docstring)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if iou_type == "segm":
        return [{k: v for k, v in det.items() if k != "bbox"} for det in results]
    return [dict(det, bbox=list(det["bbox"])) for det in results]


def coco_dt(gt, results: Sequence[dict], iou_type: str = "bbox"):
    """Results as a COCO object via `COCO.loadRes` (which sets area = w * h, or the mask's
    area for "segm", and iscrowd = 0).

    loadRes cannot take an empty list (it looks at results[0]), so no detections at all gets
    an empty results object instead: every category with ground truth then scores AP 0.
    """
    from pycocotools.coco import COCO

    with quiet():
        if results:
            return gt.loadRes(scored_results(results, iou_type))
        dt = COCO()
        dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                      "annotations": []}
        dt.createIndex()
        return dt


def run_cocoeval(
    dataset: Dataset,
    results: Sequence[dict],
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
    iou_type: str = "bbox",
):
    """Evaluate, accumulate and summarise with COCOeval (`iou_type` "bbox" or "segm"); returns
    the COCOeval object.

    `image_ids` / `category_ids` restrict the evaluation (default: all in the annotations).
    """
    from pycocotools.cocoeval import COCOeval

    gt = coco_gt(dataset)
    dt = coco_dt(gt, results, iou_type)
    ev = COCOeval(gt, dt, iou_type)
    if image_ids is not None:
        ev.params.imgIds = sorted(set(image_ids))
    if category_ids is not None:
        ev.params.catIds = sorted(set(category_ids))
    with quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def package_version(name: str) -> str:
    """Installed version of a distribution, for the report ("?" if unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def mean_ap(precision: np.ndarray) -> float:
    """pycocotools' reduction: the mean over entries > -1, or -1 when there are none."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def gt_counts(dataset: Dataset, image_ids: Iterable[int]) -> Counter:
    """Non-crowd ground-truth boxes per category id on the given images."""
    keep = set(image_ids)
    return Counter(
        ann["category_id"]
        for ann in dataset.data["annotations"]
        if ann["image_id"] in keep and not ann.get("iscrowd", 0)
    )


def per_category_ap(ev, dataset: Dataset) -> dict[str, dict]:
    """{name: {"id", "AP", "AP50", "num_gt"}} from COCOeval's precision (area all, 100 dets)."""
    precision = ev.eval["precision"]
    names = dataset.category_names()
    counts = gt_counts(dataset, ev.params.imgIds)
    table = {}
    for k, cat_id in enumerate(map(int, ev.params.catIds)):  # COCOeval turns ids into numpy ints
        p = precision[:, :, k, 0, -1]  # (T, R)
        table[names[cat_id]] = {"id": cat_id, "AP": mean_ap(p), "AP50": mean_ap(p[0]), "num_gt": counts.get(cat_id, 0)}
    return table


def pr_curve(precision: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray | None:
    """(T', R, K) precision -> (R,) mean over IoU thresholds and over categories with ground
    truth (`columns` picks categories). None when no category has ground truth."""
    p = precision if columns is None else precision[:, :, list(columns)]
    has_gt = (p > -1).all(axis=(0, 1))
    if not has_gt.any():
        return None
    return p[:, :, has_gt].mean(axis=(0, 2))


def coco_curves(precision5: np.ndarray, columns: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """IoU 0.50, 0.75 and 0.50:0.95 curves from COCOeval's (T, R, K, A, M) precision."""
    p = precision5[:, :, :, 0, -1]  # area "all", 100 detections: (T, R, K)
    out = {}
    for label, sl in (("IoU=0.50", slice(0, 1)), ("IoU=0.75", slice(5, 6)), ("IoU=0.50:0.95", slice(None))):
        curve = pr_curve(p[sl], columns)
        if curve is not None:
            out[label] = curve
    return out


def evaluate_coco(
    dataset: Dataset,
    results: Sequence[dict],
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
    iou_type: str = "bbox",
) -> Evaluation:
    """Standard COCO box or mask evaluation (IoU 0.50:0.95, areas, maxDets 1/10/100).

    Args:
        dataset: the annotations (with masks for "segm").
        results: COCO results, bbox = [x, y, w, h] in pixels; for "segm" each with a
            "segmentation" RLE (see `dataset.check_results`).
        image_ids: the images evaluated (default: all); ground truth elsewhere is not counted.
        category_ids: restrict to these categories (default: all).
        iou_type: "bbox" (box AP) or "segm" (mask AP).
    """
    ev = run_cocoeval(dataset, results, image_ids, category_ids, iou_type)
    metrics: dict[str, Any] = {"protocol": "coco", "iou_type": iou_type}
    metrics.update({key: float(value) for key, value in zip(COCO_KEYS, ev.stats)})
    metrics["num_images"] = len(ev.params.imgIds)
    metrics["num_categories"] = len(ev.params.catIds)
    metrics["evaluator"] = f"pycocotools {package_version('pycocotools')} COCOeval ({iou_type}, maxDets 1/10/100)"
    metrics["per_category"] = per_category_ap(ev, dataset)
    return Evaluation(metrics=metrics, curves=coco_curves(ev.eval["precision"]), recall=np.asarray(ev.params.recThrs))
