"""Fitting a whole calibration: per class where the data allow, shared otherwise; thresholds;
k-fold cross-validation over images.

A class gets its own score map and threshold when it has at least `min_examples` true AND
`min_examples` false positives among the matched detections; otherwise it uses the shared
ones, fitted on all classes pooled, and the file says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..calibration import Calibration, ClassEntry
from .fit import fit
from .matching import Matching
from .thresholds import OperatingPoint, Target, choose_threshold, evaluate_threshold

DEFAULT_MIN_EXAMPLES = 10


@dataclass(frozen=True)
class Examples:
    """The detections that count (ignored ones dropped), with their class names.

    scores: (N,) uncalibrated scores; labels: (N,) bool true positive; names: (N,) object
    class names; image_ids: (N,) int64. gt_image_ids: class name -> (G,) the image of each
    ground-truth object (num_gt counts them). classes: the vocabulary, in order; category_ids: class name -> dataset category id.
    """

    scores: np.ndarray
    labels: np.ndarray
    names: np.ndarray
    image_ids: np.ndarray
    gt_image_ids: dict[str, np.ndarray]
    classes: tuple[str, ...]
    category_ids: dict[str, int]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def num_gt(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.gt_image_ids.items()}

    def on_images(self, image_ids: np.ndarray) -> "Examples":
        """The detections and ground truth of these images only."""
        rows = np.isin(self.image_ids, image_ids)
        gt = {name: ids[np.isin(ids, image_ids)] for name, ids in self.gt_image_ids.items()}
        return Examples(self.scores[rows], self.labels[rows], self.names[rows], self.image_ids[rows], gt,
                        self.classes, self.category_ids)

    @property
    def total_gt(self) -> int:
        return int(sum(self.num_gt.values()))


def examples_from(matching: Matching, names_by_id: Mapping[int, str]) -> Examples:
    """Keep the counted detections of the categories in `names_by_id` (id -> class name)."""
    keep = matching.used() & np.isin(matching.category_ids, list(names_by_id))
    names = np.array([names_by_id[int(c)] for c in matching.category_ids[keep]], dtype=object)
    return Examples(
        scores=matching.scores[keep], labels=matching.tp[keep], names=names, image_ids=matching.image_ids[keep],
        gt_image_ids={name: matching.gt_image_ids.get(cid, np.zeros(0, np.int64)) for cid, name in names_by_id.items()},
        classes=tuple(names_by_id.values()), category_ids={name: int(cid) for cid, name in names_by_id.items()},
    )


def _point_stats(point: OperatingPoint | None) -> dict:
    if point is None:
        return {"precision": None, "recall": None, "f1": None, "kept": 0}
    d = point.to_dict()
    d.pop("threshold")
    if d["target_reached"]:
        d.pop("target_reached")
    return d


def fit_calibration(ex: Examples, method: str, target: Target, min_examples: int = DEFAULT_MIN_EXAMPLES) -> Calibration:
    """Fit the shared and per-class maps and thresholds (model/templates left unset)."""
    labels = ex.labels.astype(np.float64)
    shared = fit(method, ex.scores, labels)
    shared_point = choose_threshold(shared(ex.scores), ex.labels, ex.total_gt, target)
    shared_threshold = shared_point.threshold
    shared_stats = {"true_positives": int(ex.labels.sum()), "false_positives": int((~ex.labels).sum()),
                    "num_gt": ex.total_gt, **_point_stats(shared_point)}
    classes: dict[str, ClassEntry] = {}
    for name in ex.classes:
        rows = ex.names == name
        s, y = ex.scores[rows], ex.labels[rows]
        pos, neg = int(y.sum()), int((~y).sum())
        counts = {"true_positives": pos, "false_positives": neg, "num_gt": ex.num_gt.get(name, 0)}
        if pos >= min_examples and neg >= min_examples:
            calibrator = fit(method, s, y.astype(np.float64))
            point = choose_threshold(calibrator(s), y, counts["num_gt"], target)
            classes[name] = ClassEntry(name=name, threshold=point.threshold, source="class", calibrator=calibrator,
                                       category_id=ex.category_ids.get(name), stats={**counts, **_point_stats(point)})
        else:
            point = evaluate_threshold(shared(s), y, counts["num_gt"], shared_threshold) if len(s) else None
            reason = (f"too few examples: {pos} true and {neg} false positives "
                      f"(a class fit needs {min_examples} of each)")
            classes[name] = ClassEntry(name=name, threshold=shared_threshold, source="shared", calibrator=None,
                                       category_id=ex.category_ids.get(name),
                                       stats={**counts, **_point_stats(point), "reason": reason})
    return Calibration(method=method, target=str(target), shared=shared, shared_threshold=shared_threshold,
                       classes=classes, shared_stats=shared_stats)


def calibrated(cal: Calibration, ex: Examples) -> tuple[np.ndarray, np.ndarray]:
    """((N,) calibrated scores, (N,) the threshold of each detection's class)."""
    probs = cal.apply(ex.scores, ex.names)
    thresholds = np.array([cal.threshold_for(n) for n in ex.names], dtype=np.float64)
    return probs, thresholds


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold predictions: each image's detections calibrated by a fit on the other folds.

    probs: (N,) calibrated scores; thresholds: (N,) the fold's threshold for each detection's
    class; folds: how many folds ran (0 when there were too few images).
    """

    probs: np.ndarray
    thresholds: np.ndarray
    folds: int
    seed: int


def cross_validate(ex: Examples, image_ids: Sequence[int], method: str, target: Target, min_examples: int,
                   folds: int = 5, seed: int = 0, progress=None) -> CrossValidation | None:
    """k-fold cross-validation over images (detections of one image stay together: they are
    correlated). `image_ids`: every evaluated image (also those without detections), shuffled
    with `seed`. None when fewer than 2 images, or a training split lacks true or false
    positives."""
    ids = np.array(sorted(set(int(i) for i in image_ids)), dtype=np.int64)
    k = min(int(folds), len(ids))
    if k < 2:
        return None
    perm = np.random.default_rng(seed).permutation(ids)
    probs = np.zeros(len(ex), dtype=np.float64)
    thresholds = np.zeros(len(ex), dtype=np.float64)
    for fold, held in enumerate(np.array_split(perm, k)):
        test = np.isin(ex.image_ids, held)
        train = ex.on_images(np.setdiff1d(ids, held))
        if train.labels.all() or not train.labels.any():
            return None
        cal = fit_calibration(train, method, target, min_examples)
        probs[test], thresholds[test] = calibrated(cal, ex.on_images(held))
        if progress is not None:
            progress(fold + 1, k)
    return CrossValidation(probs=probs, thresholds=thresholds, folds=k, seed=int(seed))
