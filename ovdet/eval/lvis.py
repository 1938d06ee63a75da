"""LVIS box or mask AP through lvis-api's LVISEval (the federated protocol), in two modes:

  - "standard": the LVIS challenge rule, at most 300 detections per image (LVISResults keeps
    the 300 best-scored of each image).
  - "fixed": Fixed AP (Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors: The
    Devil is in the Details"; used by YOLO-World, YOLOE): no per-image limit, instead the
    10,000 best-scored detections of each category over the whole dataset, so AP no longer
    depends on how a detector spreads its detections over categories within an image.

Mask AP (iou_type "segm") gives LVISResults the results without "bbox", so that each
detection's area is its mask's (as for COCO, see `ovdet.eval.coco`).

Federated means: a detection of a category counts only on images where that category is
annotated (present, or listed in the image's `neg_category_ids`); unmatched detections of
categories in `not_exhaustive_category_ids` are not false positives.

lvis-api 0.5.3 (the current release) calls `np.float`, which numpy removed in 1.24. ovdet
gives lvis-api's eval module a view of numpy that still has those aliases instead of pinning
numpy or changing numpy itself (`lvis_api()`).
"""

from __future__ import annotations

import contextlib
import logging
import types
import warnings
from typing import Iterable, Sequence

import numpy as np

from .coco import Evaluation, gt_counts, mean_ap, package_version, pr_curve, scored_results
from .dataset import AnnotationError, Dataset, only_images

LVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
MODES = ("standard", "fixed")
STANDARD_MAX_DETS_PER_IMAGE = 300
FIXED_MAX_DETS_PER_CLASS = 10_000

# aliases numpy deprecated in 1.20 and removed in 1.24; they meant the Python builtins
_REMOVED_ALIASES = {"float": float, "int": int, "bool": bool, "object": object, "complex": complex, "str": str}


class _NumpyWithAliases(types.ModuleType):
    """numpy, plus the removed scalar aliases; everything else is numpy's own attribute."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.__dict__.update({k: v for k, v in vars(np).items() if not k.startswith("__")})

    def __getattr__(self, name: str):
        # only reached for names not copied above: the aliases, and numpy's lazy submodules
        if name in _REMOVED_ALIASES:
            return _REMOVED_ALIASES[name]
        return getattr(np, name)


def lvis_api():
    """Import lvis-api, ready for numpy >= 1.24, without touching global logging.

    - Its eval module gets `_NumpyWithAliases` as its `np` (numpy itself is not modified).
    - `import lvis` calls `logging.basicConfig`, which would silently disable the user's own
      later basicConfig call; the handler it adds to an unconfigured root logger is removed.
    """
    root = logging.getLogger()
    had_handlers = list(root.handlers)
    import lvis
    import lvis.eval as lvis_eval_module

    if not had_handlers:
        for handler in list(root.handlers):
            root.removeHandler(handler)
    if not isinstance(lvis_eval_module.np, _NumpyWithAliases) and not hasattr(np, "float"):
        lvis_eval_module.np = _NumpyWithAliases()
    return lvis


@contextlib.contextmanager
def _quiet_lvis():
    """lvis-api logs at WARNING for normal use ("Assuming user provided the results in correct
    format") through the deprecated Logger.warn; neither belongs in ovdet's report."""
    logger = logging.getLogger("lvis")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(previous)


def check_lvis(dataset: Dataset) -> None:
    if dataset.kind != "lvis":
        raise AnnotationError(
            f"{dataset.path.name} is not LVIS-style: the federated protocol needs 'neg_category_ids' and "
            "'not_exhaustive_category_ids' on every image and 'frequency' on every category (use --protocol coco)"
        )


def lvis_gt(dataset: Dataset):
    """An `lvis.LVIS` built from the parsed file (its constructor only reads paths)."""
    lvis = lvis_api()
    gt = lvis.LVIS.__new__(lvis.LVIS)
    gt.logger = logging.getLogger("lvis.lvis")
    data = dict(dataset.data)
    data["annotations"] = [dict(ann) for ann in dataset.data["annotations"]]  # LVISEval adds keys
    gt.dataset = data
    gt._create_index()
    return gt


def lvis_dt(gt, results: Sequence[dict], max_dets_per_image: int, iou_type: str = "bbox"):
    """`lvis.LVISResults` (area = w * h; best `max_dets_per_image` per image, -1 = no limit).

    LVISResults cannot take an empty list (it looks at results[0]); no detections at all gets
    an empty results object, so every category with ground truth scores AP 0.
    """
    lvis = lvis_api()
    if results:
        return lvis.LVISResults(gt, scored_results(results, iou_type), max_dets=max_dets_per_image)
    dt = lvis.LVISResults.__new__(lvis.LVISResults)
    dt.logger = logging.getLogger("lvis.results")
    dt.dataset = {**gt.dataset, "annotations": []}
    dt._create_index()
    return dt


def top_per_class(results: Sequence[dict], k: int) -> list[dict]:
    """The `k` best-scored detections of each category over the whole result set (Fixed AP).

    Categories keep their order of first appearance; within one, the sort by score is stable,
    so equal scores keep their input order.
    """
    by_category: dict[int, list[dict]] = {}
    for det in results:
        by_category.setdefault(det["category_id"], []).append(det)
    out: list[dict] = []
    for dets in by_category.values():
        out.extend(sorted(dets, key=lambda d: d["score"], reverse=True)[:k])
    return out


def evaluate_lvis(
    dataset: Dataset,
    results: Sequence[dict],
    image_ids: Iterable[int] | None = None,
    mode: str = "standard",
    max_dets_per_class: int = FIXED_MAX_DETS_PER_CLASS,
    iou_type: str = "bbox",
) -> Evaluation:
    """LVIS box or mask AP: AP, AP50, AP75, APs/m/l, APr/c/f (rare / common / frequent), AR.

    Args:
        dataset: LVIS-style annotations (see `check_lvis`).
        results: COCO-format results, bbox = [x, y, w, h], category ids = LVIS ids.
        image_ids: evaluated images (default: all). Fixed AP ranks each category's detections
            over these images only.
        mode: "standard" (300 per image) or "fixed" (`max_dets_per_class` per category).
        iou_type: "bbox" (box AP) or "segm" (mask AP; results with "segmentation" RLEs).
    """
    if mode not in MODES:
        raise ValueError(f"LVIS mode must be one of {MODES}, got {mode!r}")
    check_lvis(dataset)
    lvis = lvis_api()
    if image_ids is not None:
        image_ids = sorted(set(image_ids))
        results = only_images(results, image_ids)
    capped = 0
    if mode == "fixed":
        counts: dict[int, int] = {}
        for det in results:
            counts[det["category_id"]] = counts.get(det["category_id"], 0) + 1
        capped = sum(n > max_dets_per_class for n in counts.values())
        results = top_per_class(results, max_dets_per_class)
        per_image = -1
    else:
        per_image = STANDARD_MAX_DETS_PER_IMAGE

    with _quiet_lvis():
        gt = lvis_gt(dataset)
        dt = lvis_dt(gt, results, per_image, iou_type)
        ev = lvis.LVISEval(gt, dt, iou_type=iou_type)
        if image_ids is not None:
            ev.params.img_ids = image_ids
        ev.params.max_dets = per_image  # names the AR keys; the limit itself was applied above
        ev.run()

    metrics: dict = {"protocol": "lvis", "iou_type": iou_type, "lvis_mode": mode}
    metrics.update({key: float(ev.results[key]) for key in LVIS_KEYS})
    for key in ("AR", "ARs", "ARm", "ARl"):
        metrics[key] = float(ev.results[f"{key}@{per_image}"])
    metrics["max_dets_per_image"] = per_image if per_image > 0 else None
    metrics["max_dets_per_class"] = max_dets_per_class if mode == "fixed" else None
    if mode == "fixed":
        metrics["num_categories_capped"] = capped
    metrics["num_images"] = len(ev.params.img_ids)
    metrics["num_categories"] = len(ev.params.cat_ids)
    rule = (f"{STANDARD_MAX_DETS_PER_IMAGE} detections per image" if mode == "standard"
            else f"Fixed AP, {max_dets_per_class:,} detections per category")
    metrics["evaluator"] = f"lvis-api {package_version('lvis')} LVISEval ({iou_type}, federated; {rule})"

    precision = ev.eval["precision"]  # (T, R, K, A)
    names = dataset.category_names()
    freq = {cat["id"]: cat["frequency"] for cat in dataset.categories}
    n_gt = gt_counts(dataset, ev.params.img_ids)
    table = {}
    for k, cat_id in enumerate(map(int, ev.params.cat_ids)):
        p = precision[:, :, k, 0]
        table[names[cat_id]] = {
            "id": cat_id, "AP": mean_ap(p), "AP50": mean_ap(p[0]), "num_gt": n_gt.get(cat_id, 0),
            "frequency": freq[cat_id],
        }
    metrics["per_category"] = table

    p_all = precision[:, :, :, 0]  # area "all": (T, R, K)
    curves = {}
    for label, sl in (("IoU=0.50", slice(0, 1)), ("IoU=0.75", slice(5, 6)), ("IoU=0.50:0.95", slice(None))):
        curve = pr_curve(p_all[sl])
        if curve is not None:
            curves[label] = curve
    for group, label in zip(ev.freq_groups, ("rare", "common", "frequent")):
        curve = pr_curve(p_all, group) if group else None
        if curve is not None:
            curves[f"{label} IoU=0.50:0.95"] = curve
    return Evaluation(metrics=metrics, curves=curves, recall=ev.params.rec_thrs)
