"""The files `ovdet audit` writes: predictions.csv, summary.csv and chart.png."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_output
from .stats import MIN_EXPECTED
from .summary import AuditRow, AuditSummary


def write_predictions_csv(rows: Sequence[AuditRow], class_names: Sequence[str], path: str | Path) -> Path:
    """image, group, p_<class> for each class, top_class: one row per image."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "x", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "group"] + [f"p_{n}" for n in class_names] + ["top_class"])
        for r in rows:
            w.writerow([r.image, r.group] + [f"{p:.6f}" for p in r.probs] + [class_names[r.top()]])
    return path


def write_summary_csv(summary: AuditSummary, path: str | Path) -> Path:
    """One row per group: n, then per class the top-class count, its share and the mean
    probability; the chi-square result is repeated on every row so the file stands alone."""
    path = Path(path)
    names, t = summary.class_names, summary.chi2
    with atomic_output(path) as tmp, open(tmp, "x", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "n"] + [f"top_{n}" for n in names] + [f"share_{n}" for n in names]
                   + [f"mean_p_{n}" for n in names] + ["chi2", "dof", "p_value", "cramers_v", "low_expected_cells"])
        test = [_fmt(t.statistic), t.dof, _fmt(t.p_value), _fmt(t.cramers_v), t.low_expected]
        for g, s, c, sh, m in zip(summary.groups, summary.sizes, summary.counts, summary.shares, summary.mean_probs):
            w.writerow([g, int(s)] + [int(k) for k in c] + [f"{x:.4f}" for x in sh] + [f"{x:.6f}" for x in m] + test)
    return path


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def bar_chart(summary: AuditSummary, path: str | Path) -> Path:
    """PNG with two panels per group: share of images per top class (counts on the bars) and
    mean probability per class; the title carries the chi-square result and any caution.

    Uses matplotlib's Agg canvas directly: no pyplot, no global backend change, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    g, c = len(summary.groups), len(summary.class_names)
    panel_width = min(max(4.0, 0.35 * g * c + 1.5), 15.0)  # room for g groups of c bars
    fig = Figure(figsize=(2 * panel_width, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    x = np.arange(g)
    width = 0.8 / max(c, 1)
    labels = [f"{name}\n(n={int(n)})" for name, n in zip(summary.groups, summary.sizes)]
    panels = fig.subplots(1, 2)
    for ax, values, title, counted in ((panels[0], summary.shares, "share of images with this top class", True),
                                       (panels[1], summary.mean_probs, "mean probability", False)):
        for k, name in enumerate(summary.class_names):
            bars = ax.bar(x + (k - (c - 1) / 2) * width, values[:, k], width, label=name)
            if counted:  # raw counts on the bars, so a 100% share of 2 images is not over-read
                ax.bar_label(bars, labels=[str(int(v)) for v in summary.counts[:, k]], fontsize=8)
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
    panels[1].legend(fontsize=8, loc="upper right")
    caption = summary.chi2.describe()
    if summary.chi2.warning():
        caption += f"\ncaution: {summary.chi2.low_expected} of {summary.chi2.cells} expected counts < {MIN_EXPECTED}; p-value unreliable"
    fig.suptitle(caption, fontsize=9)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
