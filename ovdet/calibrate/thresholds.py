"""Operating points: the score threshold that reaches a target precision, or maximises F1.

Precision and recall are those of the detections kept by `score > threshold`, against the
class's ground truth (`num_gt`, which also counts objects no detection found):
precision = TP / (TP + FP), recall = TP / num_gt, F1 = 2 TP / (TP + FP + num_gt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TargetError(ValueError):
    """A --target that is neither precision=P nor f1."""


@dataclass(frozen=True)
class Target:
    """kind "precision" with value in (0, 1), or kind "f1" (value None)."""

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Target":
        """"precision=0.9" or "f1"."""
        text = text.strip().lower()
        if text == "f1":
            return cls("f1")
        key, _, value = text.partition("=")
        if key.strip() == "precision" and value:
            try:
                p = float(value)
            except ValueError:
                p = -1.0
            if 0.0 < p < 1.0:
                return cls("precision", p)
            raise TargetError(f"--target precision=P needs 0 < P < 1, got {value!r}")
        raise TargetError(f"--target must be precision=P (e.g. precision=0.9) or f1, got {text!r}")

    def __str__(self) -> str:
        return "f1" if self.kind == "f1" else f"precision={self.value:g}"


@dataclass(frozen=True)
class OperatingPoint:
    """threshold: keep scores strictly above it. reached: the target precision was met (always
    True for F1). kept: detections above the threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float
    kept: int
    reached: bool = True

    def to_dict(self) -> dict:
        return {"threshold": round(self.threshold, 6), "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4), "kept": self.kept,
                "target_reached": self.reached}


@dataclass(frozen=True)
class PRCurve:
    """One point per distinct score, highest first: keeping every detection scoring >= scores[k]
    gives tp[k] true and fp[k] false positives.

    scores, tp, fp, precision, recall: (K,) arrays; num_gt: ground-truth objects.
    """

    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: int

    @property
    def precision(self) -> np.ndarray:
        return self.tp / np.maximum(self.tp + self.fp, 1)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.num_gt if self.num_gt > 0 else np.zeros_like(self.tp, dtype=np.float64)

    @property
    def f1(self) -> np.ndarray:
        return 2.0 * self.tp / np.maximum(self.tp + self.fp + self.num_gt, 1)


def pr_curve(scores: np.ndarray, labels: np.ndarray, num_gt: int) -> PRCurve:
    """(N,) scores and 0/1 labels (1 = true positive) -> the curve over distinct scores."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    # the last index of each run of equal scores: ties are kept or dropped together
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1] if len(s) else np.zeros(0, dtype=np.int64)
    return PRCurve(scores=s[last], tp=tp[last].astype(np.float64), fp=fp[last].astype(np.float64), num_gt=int(num_gt))


def _cut_below(curve: PRCurve, k: int) -> float:
    """A threshold that keeps exactly the detections scoring >= curve.scores[k] (halfway to
    the next lower distinct score, so that `score > threshold` keeps the chosen ties)."""
    lower = curve.scores[k + 1] if k + 1 < len(curve.scores) else 0.0
    return float(0.5 * (curve.scores[k] + lower))


def choose_threshold(scores: np.ndarray, labels: np.ndarray, num_gt: int, target: Target) -> OperatingPoint | None:
    """The operating point for `target`; None when there are no detections.

    precision=P: the lowest threshold (so the highest recall) whose kept detections have
    precision >= P; when none does, the most precise point (ties: higher recall), with
    `reached=False`. f1: the threshold with the highest F1 (ties: the higher threshold).
    """
    curve = pr_curve(scores, labels, num_gt)
    if not len(curve.scores):
        return None
    precision, recall, f1 = curve.precision, curve.recall, curve.f1
    reached = True
    if target.kind == "f1":
        k = int(np.argmax(f1))
    else:
        ok = np.nonzero(precision >= target.value - 1e-12)[0]
        if len(ok):
            k = int(ok[-1])
        else:
            reached = False
            best = precision.max()
            k = int(np.nonzero(precision >= best - 1e-12)[0][-1])
    return OperatingPoint(threshold=_cut_below(curve, k), precision=float(precision[k]), recall=float(recall[k]),
                          f1=float(f1[k]), kept=int(curve.tp[k] + curve.fp[k]), reached=reached)


def evaluate_threshold(scores: np.ndarray, labels: np.ndarray, num_gt: int, threshold: float) -> OperatingPoint:
    """Precision / recall / F1 of `score > threshold` (e.g. on held-out data)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    keep = s > threshold
    tp, kept = int((keep & y).sum()), int(keep.sum())
    precision = tp / kept if kept else 0.0
    recall = tp / num_gt if num_gt > 0 else 0.0
    f1 = 2.0 * tp / (kept + num_gt) if kept + num_gt else 0.0
    return OperatingPoint(threshold=float(threshold), precision=precision, recall=recall, f1=f1, kept=kept)
