"""Human-readable output of an evaluation: metrics table, per-category AP table, PR plot.

Numbers are shown as in metrics.json (fractions in [0, 1]); "n/a" marks -1, i.e. a slice
without ground truth (e.g. LVIS APr on images that contain no rare category).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_output
from .coco import Evaluation

GROUPS = {
    "coco": [("AP", "AP50", "AP75", "APs", "APm", "APl"), ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")],
    "ov-coco": [("AP50_novel", "AP50_base", "AP50_all"), ("AP", "AP50", "AP75", "APs", "APm", "APl")],
    "lvis": [("AP", "AP50", "AP75", "APs", "APm", "APl"), ("APr", "APc", "APf", "AR", "ARs", "ARm", "ARl")],
}
PER_CATEGORY_ROWS = 40  # longer tables show the best and worst halves


def _value(x: Any) -> str:
    if not isinstance(x, (int, float)):
        return str(x)
    return "n/a" if x < 0 else f"{x:.3f}"


def format_metrics(metrics: dict) -> str:
    """The summary table: which protocol and evaluator, how many images, then the numbers."""
    protocol = metrics["protocol"]
    lines = [f"protocol: {protocol}  ({metrics.get('evaluator', '')})"]
    if protocol == "ov-coco":
        lines.append(f"split: {metrics.get('split', '')}; the second row is COCO AP over those 65 classes")
    if protocol == "lvis":
        mode = metrics.get("lvis_mode")
        if mode == "standard":
            lines.append(f"lvis mode: standard ({metrics.get('max_dets_per_image')} detections per image)")
        else:
            lines.append(f"lvis mode: fixed AP ({metrics.get('max_dets_per_class'):,} detections per category, "
                         "no per-image limit)")
    images = f"images: {metrics['num_images']} evaluated"
    if metrics.get("num_images_skipped"):
        images += f", {metrics['num_images_skipped']} skipped (missing or unreadable, not scored)"
    lines.append(images + f"; categories: {metrics.get('num_categories', '?')}")
    for keys in GROUPS[protocol]:
        width = max(7, *(len(k) + 2 for k in keys))
        lines.append("".join(k.ljust(width) for k in keys).rstrip())
        lines.append("".join(_value(metrics.get(k, -1)).ljust(width) for k in keys).rstrip())
    return "\n".join(lines)


def sorted_categories(metrics: dict) -> tuple[list[tuple[str, dict]], int]:
    """Categories with ground truth, best AP first (ties by name), and how many had none."""
    table = metrics.get("per_category", {})
    scored = [(name, row) for name, row in table.items() if row["AP"] >= 0]
    scored.sort(key=lambda item: (-item[1]["AP"], item[0]))
    return scored, len(table) - len(scored)


def format_per_category(metrics: dict, max_rows: int = PER_CATEGORY_ROWS) -> str:
    """Per-category AP table sorted by AP (descending)."""
    rows, undefined = sorted_categories(metrics)
    if not rows:
        return "per-category AP: no category has ground truth on the evaluated images"
    extra = "split" if "split" in rows[0][1] else "frequency" if "frequency" in rows[0][1] else None
    name_w = max(8, *(len(name) for name, _ in rows))
    header = f"{'#':>4}  {'category':<{name_w}}  {'id':>5}  {'AP':>6}  {'AP50':>6}  {'GT':>5}"
    header += f"  {extra}" if extra else ""
    lines = ["per-category AP (sorted, best first):", header]

    def fmt(rank: int, name: str, row: dict) -> str:
        line = (f"{rank:>4}  {name:<{name_w}}  {row['id']:>5}  {_value(row['AP']):>6}  {_value(row['AP50']):>6}"
                f"  {row['num_gt']:>5}")
        return line + (f"  {row[extra]}" if extra else "")

    if len(rows) <= max_rows:
        lines += [fmt(i + 1, name, row) for i, (name, row) in enumerate(rows)]
    else:
        half = max_rows // 2
        lines += [fmt(i + 1, name, row) for i, (name, row) in enumerate(rows[:half])]
        lines.append(f"{'':>4}  ... {len(rows) - 2 * half} more (all in metrics.json)")
        lines += [fmt(len(rows) - half + i + 1, name, row) for i, (name, row) in enumerate(rows[-half:])]
    if undefined:
        lines.append(f"({undefined} categories have no ground truth on these images: AP n/a)")
    return "\n".join(lines)


def plot_pr(evaluation: Evaluation, out_dir: str | Path, title: str | None = None) -> Path:
    """Write `out_dir/pr_curve.png`: mean precision vs recall, one line per curve.

    Uses matplotlib's Agg canvas directly (no pyplot), so it works headless and leaves the
    caller's matplotlib backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = evaluation.metrics
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in evaluation.curves.items():
        ax.plot(evaluation.recall, curve, label=label, linewidth=1.6)
    if not evaluation.curves:
        ax.text(0.5, 0.5, "no ground truth on the evaluated images", ha="center", va="center")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (mean over categories)")
    mode = f", {metrics['lvis_mode']}" if metrics.get("lvis_mode") else ""
    ax.set_title(title or f"{metrics['protocol']}{mode}: precision-recall, {metrics['num_images']} images")
    ax.grid(True, alpha=0.3)
    if evaluation.curves:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    path = out / "pr_curve.png"
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
