"""The forgetting report: what fine-tuning gained on the trained classes and what it cost on
classes it never saw, for the base model, the fine-tuned one and weight-space merges.

AP comes from ovdet's own evaluation (`ovdet.eval.runner.run_detector` over the saved
checkpoint folder, then pycocotools through `ovdet.eval.coco.evaluate_coco`), so the numbers
are what `ovdet eval --model DIR/model` reports.

Writes report.json ({"rows": [{"model", "alpha", "trained": {"AP", "AP50"}, "probe": {...}}]}),
report.md (the same as a table) and forgetting.png (AP on trained vs probe classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..files import write_json

EVAL_THRESHOLD = 0.001  # as `ovdet eval`: AP ranks every candidate; --max-det bounds the output


@dataclass(frozen=True)
class EvalSet:
    """An annotation file to score and the category names scored on it."""

    coco: Path
    names: tuple[str, ...]


def evaluate_folder(model_dir: Path, evalset: EvalSet, device: str | None, batch_size: int = 8) -> dict[str, float]:
    """{"AP", "AP50"} of the checkpoint folder on `evalset` (images: absolute file names, or
    names relative to the annotation file's folder)."""
    import tempfile

    from ..detector import Detector
    from ..eval.coco import evaluate_coco
    from ..eval.dataset import load_dataset
    from ..eval.runner import run_detector

    dataset = load_dataset(evalset.coco)
    wanted = {n.casefold() for n in evalset.names}
    cats = [c for c in dataset.categories if c["name"].casefold() in wanted]
    detector = Detector.from_pretrained(model_dir, device=device, threshold=EVAL_THRESHOLD, max_detections=100)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_detector(detector, dataset, evalset.coco.parent, classes=[c["name"] for c in cats],
                               category_ids=[c["id"] for c in cats], results_out=Path(tmp) / "results.json",
                               batch_size=batch_size, overwrite=True, progress=False)
    ev = evaluate_coco(dataset, outcome.results, outcome.image_ids, [c["id"] for c in cats])
    return {"AP": ev.metrics["AP"], "AP50": ev.metrics["AP50"]}


def evaluate_row(label: str, alpha: float | None, model_dir: Path, trained: EvalSet | None, probe: EvalSet | None,
                 device: str | None) -> dict:
    row: dict = {"model": label, "alpha": alpha}
    for key, evalset in (("trained", trained), ("probe", probe)):
        if evalset is not None and evalset.names:
            row[key] = evaluate_folder(model_dir, evalset, device)
    return row


def _cell(row: dict, key: str, metric: str) -> str:
    value = row.get(key, {}).get(metric)
    return "-" if value is None or value < 0 else f"{100 * value:.1f}"


def markdown(rows: Sequence[dict], trained: EvalSet | None, probe: EvalSet | None) -> str:
    lines = ["# Forgetting report", ""]
    if trained is not None:
        lines.append(f"Trained classes ({len(trained.names)}), scored on {trained.coco.name}: {', '.join(trained.names)}")
    if probe is not None and probe.names:
        lines.append(f"Probe classes not trained ({len(probe.names)}), scored on {probe.coco.name}: "
                     f"{', '.join(probe.names)}")
    lines += ["", "| model | A | AP trained | AP50 trained | AP probe | AP50 probe |", "|---|---|---|---|---|---|"]
    for r in rows:
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:g}"
        lines.append(f"| {r['model']} | {alpha} | {_cell(r, 'trained', 'AP')} | {_cell(r, 'trained', 'AP50')} | "
                     f"{_cell(r, 'probe', 'AP')} | {_cell(r, 'probe', 'AP50')} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: Path) -> Path | None:
    """Grouped bars of AP on trained and probe classes per model (matplotlib, Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [r["model"] if r["alpha"] is None else f"{r['model']}\nA={r['alpha']:g}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(rows)), 3.2))
    for k, (key, colour) in enumerate((("trained", "#2b7bba"), ("probe", "#e08214"))):
        values = [100 * max(r.get(key, {}).get("AP", 0.0), 0.0) for r in rows]
        ax.bar([i + (k - 0.5) * 0.38 for i in range(len(rows))], values, 0.38, label=f"AP {key}", color=colour)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_title("What fine-tuning gained (trained) and forgot (probe)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_plot(losses: Sequence[dict], path: Path) -> Path | None:
    """The loss curve (total and terms per step)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    steps = [e["step"] for e in losses]
    for key in ("loss", "focal", "l1", "giou", "objectness"):
        if losses and key in losses[0]:
            ax.plot(steps, [e[key] for e in losses], label=key, linewidth=1.5 if key == "loss" else 0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss per box")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, rows: Sequence[dict], trained: EvalSet | None, probe: EvalSet | None) -> dict:
    """report.json, report.md and forgetting.png in `out`; returns the JSON payload."""
    payload = {"rows": list(rows), "trained_classes": list(trained.names) if trained else [],
               "probe_classes": list(probe.names) if probe else []}
    write_json(out / "report.json", payload, indent=2)
    (out / "report.md").write_text(markdown(rows, trained, probe), encoding="utf-8")
    plot(rows, out / "forgetting.png")
    return payload


__all__ = ["EVAL_THRESHOLD", "EvalSet", "evaluate_folder", "evaluate_row", "loss_plot", "markdown", "plot",
           "write_report"]
