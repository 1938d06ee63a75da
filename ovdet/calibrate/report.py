"""How good a calibration is: ECE and Brier score, per-class operating points, plots.

ECE (expected calibration error): detections are put in `bins` equal-width score bins over
[0, 1]; ECE = sum over bins of (bin count / N) * |mean score - fraction of true positives|.
It is 0 for perfectly calibrated scores. Brier score: mean (score - label)^2, label 1 for a
true positive; it rewards calibration and sharpness together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import Calibration
from ..files import atomic_output
from .perclass import CrossValidation, Examples, calibrated
from .thresholds import evaluate_threshold, pr_curve

ECE_BINS = 15


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((B,) detections per bin, (B,) mean score, (B,) fraction of true positives); NaN means
    for empty bins. Bin b holds scores in [b/B, (b+1)/B) (the last also holds 1.0)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        mean_y = np.bincount(index, weights=y, minlength=bins) / count
    return count, mean_p, mean_y


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over `bins` equal-width bins (0 = perfectly calibrated)."""
    count, mean_p, mean_y = reliability(probs, labels, bins)
    used = count > 0
    if not used.any():
        return float("nan")
    return float(np.sum(count[used] * np.abs(mean_p[used] - mean_y[used])) / count.sum())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared difference between score and 0/1 label."""
    p = np.asarray(probs, dtype=np.float64)
    return float(np.mean((p - np.asarray(labels, dtype=np.float64)) ** 2)) if len(p) else float("nan")


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"ece": round(ece(probs, labels), 4), "brier": round(brier(probs, labels), 4)}


def summarise(cal: Calibration, ex: Examples, cv: CrossValidation | None) -> dict[str, Any]:
    """The `report` section of the YAML: ECE/Brier before and after (fitting images and
    cross-validated), and held-out precision/recall at the cross-validated thresholds."""
    probs, _ = calibrated(cal, ex)
    report: dict[str, Any] = {
        "ece_bins": ECE_BINS,
        "detections": len(ex),
        "before": _scores(ex.scores, ex.labels),
        "after": _scores(probs, ex.labels),
    }
    if cv is None:
        report["cross_validation"] = "not run (too few images, or a fold without true or false positives)"
        return report
    kept = cv.probs > cv.thresholds
    tp = int((kept & ex.labels).sum())
    report["cross_validation"] = {
        "folds": cv.folds, "seed": cv.seed, "by": "image",
        "before": _scores(ex.scores, ex.labels),
        "after": _scores(cv.probs, ex.labels),
        "precision_at_thresholds": round(tp / kept.sum(), 4) if kept.any() else None,
        "recall_at_thresholds": round(tp / ex.total_gt, 4) if ex.total_gt else None,
    }
    for name, entry in cal.classes.items():
        rows = ex.names == name
        k = kept[rows]
        n_tp = int((k & ex.labels[rows]).sum())
        gt = ex.num_gt.get(name, 0)
        entry.stats["cv_precision"] = round(n_tp / k.sum(), 4) if k.any() else None
        entry.stats["cv_recall"] = round(n_tp / gt, 4) if gt else None
    return report


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def format_report(cal: Calibration) -> str:
    """Readable summary: before/after table, then one row per class."""
    r = cal.report
    lines = [f"calibration: {cal.method}, target {cal.target}; {r.get('detections', 0)} matched detections "
             f"(ECE over {r.get('ece_bins', ECE_BINS)} bins)"]
    lines.append(f"{'':<24}{'ECE':>8}{'Brier':>8}")
    lines.append(f"{'before':<24}{_fmt(r['before']['ece']):>8}{_fmt(r['before']['brier']):>8}")
    lines.append(f"{'after (fitting images)':<24}{_fmt(r['after']['ece']):>8}{_fmt(r['after']['brier']):>8}")
    cv = r.get("cross_validation")
    if isinstance(cv, dict):
        lines.append(f"{'after (%d-fold CV)' % cv['folds']:<24}{_fmt(cv['after']['ece']):>8}{_fmt(cv['after']['brier']):>8}")
        lines.append(f"cross-validated precision {_fmt(cv['precision_at_thresholds'])}, recall "
                     f"{_fmt(cv['recall_at_thresholds'])} at the thresholds (folds by image, seed {cv['seed']})")
    else:
        lines.append(f"cross-validation: {cv}")
    lines.append("")
    head = f"{'class':<24}{'fit':<8}{'TP':>6}{'FP':>6}{'GT':>6}{'thresh':>8}{'prec':>7}{'recall':>7}{'cv prec':>8}{'cv rec':>8}"
    lines.append(head)
    sh = cal.shared_stats
    lines.append(f"{'(all classes, shared)':<24}{'':<8}{sh.get('true_positives', 0):>6}{sh.get('false_positives', 0):>6}"
                 f"{sh.get('num_gt', 0):>6}{_fmt(cal.shared_threshold):>8}{_fmt(sh.get('precision')):>7}"
                 f"{_fmt(sh.get('recall')):>7}")
    for name, e in cal.classes.items():
        s = e.stats
        mark = "" if s.get("target_reached", True) else " (target not reached)"
        lines.append(f"{name[:23]:<24}{e.source:<8}{s.get('true_positives', 0):>6}{s.get('false_positives', 0):>6}"
                     f"{s.get('num_gt', 0):>6}{_fmt(e.threshold):>8}{_fmt(s.get('precision')):>7}"
                     f"{_fmt(s.get('recall')):>7}{_fmt(s.get('cv_precision')):>8}{_fmt(s.get('cv_recall')):>8}{mark}")
    own = sum(e.source == "class" for e in cal.classes.values())
    lines.append(f"{own} of {len(cal.classes)} classes have their own fit; the others use the shared one")
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # "tight": room for a legend outside
    return path


def place_legend_below(ax):
    """The legend under the axes, outside them: a PR curve can run through any corner (the old
    lower-left legend covered the high-recall end of the curve)."""
    return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)


def plot_reliability(ex: Examples, cal: Calibration, cv: CrossValidation | None, out_dir: str | Path) -> Path:
    """reliability.png: fraction of true positives against mean score per bin, before and
    after calibration (and cross-validated), with the detections per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, _ = calibrated(cal, ex)
    series = [("before", ex.scores), ("after (fitting images)", probs)]
    if cv is not None:
        series.append((f"after ({cv.folds}-fold CV)", cv.probs))
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for label, p in series:
        count, mean_p, mean_y = reliability(p, ex.labels)
        used = count > 0
        ax.plot(mean_p[used], mean_y[used], marker="o", label=f"{label}: ECE {ece(p, ex.labels):.3f}")
        hist.hist(p, bins=edges, histtype="step", label=label)
    ax.set_ylabel("fraction of true positives")
    ax.set_title(f"reliability ({cal.method}, {len(ex)} detections)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("score")
    hist.set_ylabel("detections")
    hist.set_yscale("log")
    fig.tight_layout()
    try:
        return _save(fig, Path(out_dir) / "reliability.png")
    finally:
        plt.close(fig)


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


def plot_pr_curves(ex: Examples, cal: Calibration, out_dir: str | Path, progress: bool = False) -> list[Path]:
    """pr/<class>.png: precision against recall of the calibrated scores, the chosen threshold
    marked; one file per class with detections and ground truth."""
    import matplotlib

    from ..progress import progress_bar

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, _ = calibrated(cal, ex)
    folder = Path(out_dir) / "pr"
    written = []
    used_names: set[str] = set()
    for name, entry in progress_bar(iterable=list(cal.classes.items()), desc="plots", unit="class", enabled=progress):
        rows = ex.names == name
        gt = ex.num_gt.get(name, 0)
        if not rows.any() or not gt:
            continue
        curve = pr_curve(probs[rows], ex.labels[rows], gt)
        point = evaluate_threshold(probs[rows], ex.labels[rows], gt, entry.threshold)
        fig, ax = plt.subplots(figsize=(5, 4))
        # one point per distinct calibrated score (isotonic ties make few); lines join them
        ax.plot(curve.recall, curve.precision, marker=".", label=f"{name} ({gt} objects)")
        ax.plot([point.recall], [point.precision], marker="*", markersize=14, color="red", linestyle="none",
                label=f"threshold {entry.threshold:.3f} ({entry.source}): P {point.precision:.2f}, R {point.recall:.2f}")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{name}: target {cal.target}")
        place_legend_below(ax)
        fig.tight_layout()
        stem = _safe_name(name)
        while stem in used_names:
            stem += "_"
        used_names.add(stem)
        try:
            written.append(_save(fig, folder / f"{stem}.png"))
        finally:
            plt.close(fig)
    return written
