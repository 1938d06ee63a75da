"""Which detections are true positives: COCO's matching, by pycocotools itself.

`COCOeval.evaluate` with one IoU threshold, the "all" area range and no per-image cap does
the matching: per image and category, detections in descending score order each take the
best still-unmatched ground-truth box with IoU >= the threshold, non-crowd boxes before crowd
regions; a detection matched to a crowd region (or an `ignore` box) is ignored, neither true
nor false positive. ovdet reads its `dtMatches` / `dtIgnore` back per detection.

LVIS-style (federated) annotations add lvis-api's rules: a detection of a category that was
not verified on its image (neither present nor in `neg_category_ids`), or an unmatched one of a
category in `not_exhaustive_category_ids`, is ignored too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..eval.coco import coco_dt, coco_gt, quiet
from ..eval.dataset import Dataset


@dataclass(frozen=True)
class Matching:
    """Per-detection outcome, aligned with the results list given to `match_results`.

    tp: (N,) bool, matched to a ground-truth box. ignored: (N,) bool, counts neither way
        (matched to a crowd region, on an image or category not evaluated, LVIS rules).
    scores: (N,) float64; category_ids, image_ids: (N,) int64.
    num_gt: category id -> ground-truth boxes that count (non-crowd) on the evaluated images.
    gt_image_ids: category id -> (num_gt,) int64, the image of each of those boxes (so that a
        subset of images knows its own ground-truth count).
    """

    tp: np.ndarray
    ignored: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    image_ids: np.ndarray
    num_gt: dict[int, int]
    gt_image_ids: dict[int, np.ndarray]
    iou: float

    def __len__(self) -> int:
        return len(self.tp)

    def used(self) -> np.ndarray:
        """(N,) bool: the detections that count (not ignored)."""
        return ~self.ignored


def match_results(
    dataset: Dataset,
    results: Sequence[dict],
    iou: float = 0.5,
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
) -> Matching:
    """Match COCO results ({"image_id", "category_id", "bbox": [x, y, w, h], "score"}, already
    checked against `dataset`) to its ground truth at IoU >= `iou`.

    image_ids / category_ids restrict what is evaluated (default: all images of the
    annotations, all categories); detections outside are marked ignored.
    """
    from pycocotools.cocoeval import COCOeval

    if not 0.0 < iou < 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1), got {iou}")
    n = len(results)
    img_ids = sorted(set(dataset.image_ids if image_ids is None else image_ids))
    cat_ids = sorted(set(dataset.category_ids if category_ids is None else category_ids))
    gt = coco_gt(dataset)
    dt = coco_dt(gt, results)  # loadRes numbers the detections 1..N in list order
    ev = COCOeval(gt, dt, "bbox")
    p = ev.params
    p.imgIds, p.catIds = img_ids, cat_ids
    p.iouThrs = np.array([iou])
    p.areaRng, p.areaRngLbl = [[0.0, 1e10]], ["all"]
    # evaluateImg keeps only the top maxDets[-1] detections per image and category: no cap here
    per_cell = Counter((d["image_id"], d["category_id"]) for d in results)
    p.maxDets = [max(per_cell.values(), default=1)]
    with quiet():
        ev.evaluate()

    tp = np.zeros(n, dtype=bool)
    ignored = np.ones(n, dtype=bool)  # detections no evaluated cell covers stay ignored
    gt_images: dict[int, list[int]] = {cid: [] for cid in cat_ids}
    for cell in ev.evalImgs:
        if cell is None:
            continue
        counted = int(np.sum(~np.asarray(cell["gtIgnore"], dtype=bool)))
        gt_images[int(cell["category_id"])].extend([int(cell["image_id"])] * counted)
        if not len(cell["dtIds"]):
            continue
        index = np.asarray(cell["dtIds"], dtype=np.int64) - 1
        tp[index] = cell["dtMatches"][0] > 0
        ignored[index] = cell["dtIgnore"][0].astype(bool)
    tp &= ~ignored
    if dataset.kind == "lvis":
        ignored |= _lvis_unverified(dataset, results, tp)
        tp &= ~ignored

    return Matching(
        tp=tp,
        ignored=ignored,
        scores=np.array([float(d["score"]) for d in results], dtype=np.float64),
        category_ids=np.array([int(d["category_id"]) for d in results], dtype=np.int64),
        image_ids=np.array([int(d["image_id"]) for d in results], dtype=np.int64),
        num_gt={cid: len(gt_images[cid]) for cid in cat_ids},
        gt_image_ids={cid: np.array(gt_images[cid], dtype=np.int64) for cid in cat_ids},
        iou=float(iou),
    )


def _lvis_unverified(dataset: Dataset, results: Sequence[dict], tp: np.ndarray) -> np.ndarray:
    """LVIS federated rules (as lvis-api applies them): (N,) bool of detections to ignore."""
    present: dict[int, set] = {}
    for ann in dataset.data["annotations"]:
        present.setdefault(ann["image_id"], set()).add(ann["category_id"])
    images = {img["id"]: img for img in dataset.images}
    out = np.zeros(len(results), dtype=bool)
    for i, det in enumerate(results):
        img = images[det["image_id"]]
        cat = det["category_id"]
        verified = cat in present.get(det["image_id"], ()) or cat in img.get("neg_category_ids", ())
        out[i] = not verified or (not tp[i] and cat in img.get("not_exhaustive_category_ids", ()))
    return out
