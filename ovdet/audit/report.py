"""`audit()`: classify images zero-shot and summarise per group; `AuditReport` writes it out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..defaults import DEFAULT_CLASSIFIER
from .groups import GroupsFileError, preview, read_groups
from .outputs import bar_chart, write_predictions_csv, write_summary_csv
from .summary import AuditRow, AuditSummary, rows_from, summarise


@dataclass(frozen=True)
class AuditReport:
    """rows: one `AuditRow` per classified image; summary: per-group statistics."""

    rows: tuple[AuditRow, ...]
    summary: AuditSummary
    skipped: tuple[str, ...] = field(default=())

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write predictions.csv, summary.csv and chart.png into `out_dir`."""
        out = Path(out_dir)
        return {
            "predictions": write_predictions_csv(self.rows, self.summary.class_names, out / "predictions.csv"),
            "summary": write_summary_csv(self.summary, out / "summary.csv"),
            "chart": bar_chart(self.summary, out / "chart.png"),
        }


def audit(images: str | Path | Sequence[str], classes: str | Iterable[str], model: Any = DEFAULT_CLASSIFIER,
          groups: str | Path | Mapping[str, str] | None = None, device: str | None = None, **overrides: Any) -> AuditReport:
    """Classify `images` (a folder, glob or list of files) with a CLIP `model` (preset, folder,
    hub id, or a ready `Classifier`) and summarise per group.

    `groups` is a CSV (see `read_groups`) or a {image path: group} mapping; None puts every
    image in one group (no test). An unreadable image raises `ImageReadError`; the CLI skips
    and reports such images instead.
    """
    from ..classify import Classifier
    from ..io import expand_image_args
    from ..text import validate_vocabulary

    names = validate_vocabulary(classes)
    args = [str(images)] if isinstance(images, (str, Path)) else [str(p) for p in images]
    paths = list(expand_image_args(args))
    root = args[0] if len(args) == 1 and os.path.isdir(args[0]) else None
    if isinstance(groups, (str, Path)):
        groups = read_groups(groups, paths, root)
    elif groups is not None:
        missing = [p for p in paths if p not in groups]
        if missing:
            raise GroupsFileError(f"groups mapping has no group for {len(missing)} image(s) ({preview(missing)})")
    classifier = model if isinstance(model, Classifier) else Classifier.from_pretrained(model, device=device, **overrides)
    rows = rows_from(classifier.classify_batch(paths, names), paths, groups)
    return AuditReport(tuple(rows), summarise(rows, names))
