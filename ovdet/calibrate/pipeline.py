"""From annotations and COCO results to a fitted, reported calibration; and back to results.

    run = calibrate_results(dataset, results, method="platt", target=Target.parse("f1"))
    run.calibration.save("calibration.yaml")
    calibrated = apply_to_results(load_calibration("calibration.yaml"), results)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import OvdetError
from ..calibration import Calibration
from .matching import Matching, match_results
from .perclass import DEFAULT_MIN_EXAMPLES, CrossValidation, Examples, cross_validate, examples_from, fit_calibration
from .report import summarise
from .thresholds import Target


class CalibrationDataError(OvdetError, ValueError):
    """The detections and annotations cannot support a fit (no detections, no ground truth...)."""


@dataclass(frozen=True)
class CalibrationRun:
    """What `calibrate_results` produced: the calibration (report included), the matched
    examples it was fitted on, and the cross-validated predictions (None if not run)."""

    calibration: Calibration
    examples: Examples
    matching: Matching
    cv: CrossValidation | None


def calibrate_results(
    dataset,
    results: Sequence[dict],
    *,
    method: str = "platt",
    target: Target = Target("f1"),
    names_by_id: Mapping[int, str] | None = None,
    image_ids: Iterable[int] | None = None,
    iou: float = 0.5,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    folds: int = 5,
    seed: int = 0,
    source: str = "results",
) -> CalibrationRun:
    """Match COCO results to `dataset`'s ground truth and fit a calibration.

    Args:
        dataset: an `ovdet.eval.dataset.Dataset`.
        results: checked COCO results ({"image_id", "category_id", "bbox": [x, y, w, h], "score"}).
        names_by_id: the vocabulary, category id -> class name (default: every category).
        image_ids: the images the results cover (default: all of the annotations').
        folds, seed: k-fold cross-validation over images (folds < 2: none).
    Raises:
        CalibrationDataError: no detections, no ground truth of the vocabulary's classes, or
            no true or no false positive to learn from.
    """
    names = dict(names_by_id) if names_by_id is not None else dataset.category_names()
    image_ids = list(dataset.image_ids if image_ids is None else image_ids)
    results = [d for d in results if d["category_id"] in names]
    if not results:
        raise CalibrationDataError(f"{source} has no detections of the {len(names)} calibrated class(es): "
                                   "nothing to calibrate")
    matching = match_results(dataset, results, iou=iou, image_ids=image_ids, category_ids=list(names))
    if not sum(matching.num_gt.values()):
        raise CalibrationDataError(f"{dataset.path.name} has no ground-truth boxes of the calibrated classes "
                                   f"on the {len(image_ids)} image(s)")
    ex = examples_from(matching, names)
    n_tp = int(ex.labels.sum())
    if n_tp == 0 or n_tp == len(ex):
        what = "true" if n_tp == 0 else "false"
        raise CalibrationDataError(f"{source}: none of the {len(ex)} counted detections is a {what} positive "
                                   f"at IoU {iou}: a calibration needs both")
    cal = fit_calibration(ex, method, target, min_examples)
    cv = cross_validate(ex, image_ids, method, target, min_examples, folds=folds, seed=seed) if folds >= 2 else None
    report = summarise(cal, ex, cv)
    fitted = {"annotations": str(dataset.path), "images": len(set(image_ids)), "iou": iou,
              "min_examples": min_examples, "detections": len(results),
              "ignored": int(matching.ignored.sum())}
    cal = dataclasses.replace(cal, report=report, fitted=fitted)
    return CalibrationRun(calibration=cal, examples=ex, matching=matching, cv=cv)


def apply_to_results(cal: Calibration, results: Sequence[dict], names_by_id: Mapping[int, str] | None = None
                     ) -> tuple[list[dict], int]:
    """COCO results with calibrated scores ("score") and the original one ("raw_score").

    names_by_id: category id -> class name (default: the ids recorded in the file). Returns
    (new results, how many detections had a category the file does not know: those get the
    shared calibration).
    """
    names = dict(names_by_id) if names_by_id is not None else cal.by_category_id()
    known = {name.casefold() for name in cal.classes}
    class_names = [names.get(d["category_id"], "") for d in results]
    unknown = sum(1 for n in class_names if n.casefold() not in known)
    probs = cal.apply(np.array([float(d["score"]) for d in results]), class_names) if results else np.zeros(0)
    out: list[dict[str, Any]] = []
    for det, p in zip(results, probs.tolist()):
        new = dict(det)
        new["raw_score"] = det["score"]
        new["score"] = round(float(p), 6)
        out.append(new)
    return out, unknown
