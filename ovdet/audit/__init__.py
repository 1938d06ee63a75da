"""Auditing zero-shot predictions for skew across groups of images.

    from ovdet.audit import audit
    report = audit("faces/", "doctor,nurse", groups="groups.csv")   # CLIP clip-b32 by default
    print(report.summary.table())
    report.write("runs/audit")   # predictions.csv, summary.csv, chart.png

Every image is classified with CLIP (prompt templates as in `classify`); per group we count
how often each class is the top class and average each class's probability. A chi-square test
of independence (top class x group) says whether the differences between groups are larger
than chance would make them at this sample size; with expected counts below 5 the test's
approximation is poor, and the report says so. A small p-value shows association, not its
cause: the groups may differ in pose, lighting or clothing as much as in who is pictured.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import OvdetError
from ..io import atomic_output

NO_GROUP = "all"  # the single group when no groups file is given
MIN_EXPECTED = 5  # the usual rule of thumb for the chi-square approximation


class GroupsFileError(OvdetError, ValueError):
    """The groups CSV is unreadable, malformed, or does not match the images."""


# -- groups file ------------------------------------------------------------------------------
def _norm(path: str) -> str:
    return Path(os.path.normpath(path)).as_posix()


def read_groups(path: str | Path, image_paths: Sequence[str], root: str | Path | None = None) -> dict[str, str]:
    """Read a groups CSV (header with columns `image` and `group`; others are ignored) and
    return {image path: group} for exactly `image_paths`.

    An entry names an image by its path as listed, its path relative to `root` (the images
    folder) or to the CSV's folder or the working directory, or its bare file name when that
    is unique among the images. Every image needs exactly one row and every row must name one
    of the images; otherwise `GroupsFileError` names the first mismatches.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(fh)
            header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
            if "image" not in header or "group" not in header:
                raise GroupsFileError(f"groups file {path} needs a header with columns image,group "
                                      f"(found: {','.join(reader.fieldnames or []) or 'nothing'})")
            rows = [(i + 2, (r.get(header["image"]) or "").strip(), (r.get(header["group"]) or "").strip())
                    for i, r in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GroupsFileError(f"cannot read groups file {path}: {exc}") from exc

    names = [Path(p).name for p in image_paths]
    aliases: dict[str, str] = {}
    for p, name in zip(image_paths, names):
        aliases[_norm(p)] = p
        if root is not None:
            aliases[_norm(os.path.relpath(p, root))] = p
        if names.count(name) == 1:
            aliases.setdefault(name, p)
    absolute = {os.path.realpath(p): p for p in image_paths}

    def lookup(entry: str) -> str | None:
        if _norm(entry) in aliases:
            return aliases[_norm(entry)]
        bases = [""] if os.path.isabs(entry) else [str(path.parent), os.getcwd()]
        for base in bases:
            hit = absolute.get(os.path.realpath(os.path.join(base, entry)))
            if hit is not None:
                return hit
        return None

    groups: dict[str, str] = {}
    first_row: dict[str, int] = {}
    unknown: list[str] = []
    for line, entry, group in rows:
        if not entry:
            raise GroupsFileError(f"groups file {path}, line {line}: empty image name")
        if not group:
            raise GroupsFileError(f"groups file {path}, line {line}: image {entry} has no group")
        image = lookup(entry)
        if image is None:
            unknown.append(entry)
            continue
        if image in groups:
            raise GroupsFileError(f"groups file {path}: image {entry} appears twice (lines {first_row[image]} and {line})")
        groups[image], first_row[image] = group, line
    missing = [Path(p).name for p in image_paths if p not in groups]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) have no row ({_first(missing)})")
        if unknown:
            parts.append(f"{len(unknown)} row(s) name no image given ({_first(unknown)})")
        raise GroupsFileError(f"groups file {path} does not match the images: {'; '.join(parts)}")
    return groups


def _first(items: Sequence[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (", ..." if len(items) > k else "")


# -- statistics -------------------------------------------------------------------------------
def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square with integer `dof` degrees of freedom.

    Exact closed forms of the regularised upper incomplete gamma Q(dof/2, x/2): a finite
    Poisson-type sum for even dof, erfc plus a finite sum for odd dof; terms are summed in log
    space so large statistics and many degrees of freedom neither overflow nor underflow early.
    """
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if not x > 0:
        return 1.0
    y = x / 2.0
    log_y = math.log(y)
    if dof % 2 == 0:
        logs = [j * log_y - y - math.lgamma(j + 1) for j in range(dof // 2)]
        head = 0.0
    else:
        logs = [(j + 0.5) * log_y - y - math.lgamma(j + 1.5) for j in range(dof // 2)]
        head = math.erfc(math.sqrt(y))
    if logs:
        top = max(logs)
        head += math.exp(top) * sum(math.exp(v - top) for v in logs)
    return min(max(head, 0.0), 1.0)


@dataclass(frozen=True)
class ChiSquare:
    """Chi-square test of independence of top class and group.

    statistic, dof, p_value: None when the test does not apply (fewer than 2 groups or fewer
    than 2 classes ever on top). cramers_v: effect size in [0, 1]. low_expected: cells whose
    expected count is below 5, out of `cells`.
    """

    statistic: float | None
    dof: int
    p_value: float | None
    n: int
    cramers_v: float | None = None
    low_expected: int = 0
    cells: int = 0
    note: str = ""

    @property
    def testable(self) -> bool:
        return self.p_value is not None

    def describe(self) -> str:
        if not self.testable:
            return f"chi-square (top class x group): not applicable, {self.note} (n = {self.n})"
        return (f"chi-square (top class x group) = {self.statistic:.2f} on {self.dof} dof, p = {self.p_value:.3g}, "
                f"Cramér's V = {self.cramers_v:.2f}, n = {self.n}")

    def warning(self) -> str | None:
        """A caution when the sample is too small for the approximation (else None)."""
        if not self.testable or not self.low_expected:
            return None
        return (f"{self.low_expected} of {self.cells} expected counts are below {MIN_EXPECTED}: the chi-square "
                "p-value is unreliable at this sample size; collect more images per group before reading much into it")


def chi_square_independence(counts: np.ndarray) -> ChiSquare:
    """(G, C) contingency table of counts -> Pearson's chi-square test of independence.
    Groups and classes with no counts are dropped first (they carry no information)."""
    table = np.asarray(counts, dtype=np.float64)
    n = int(table.sum())
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    r, c = table.shape
    if r < 2 or c < 2:
        note = "needs at least 2 groups" if r < 2 else "every image has the same top class"
        return ChiSquare(None, 0, None, n, note=note)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = (r - 1) * (c - 1)
    return ChiSquare(
        statistic=statistic, dof=dof, p_value=chi2_sf(statistic, dof), n=n,
        cramers_v=math.sqrt(statistic / (n * (min(r, c) - 1))),
        low_expected=int((expected < MIN_EXPECTED).sum()), cells=r * c,
    )


# -- rows and summary -------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditRow:
    """One image: its group and (C,) class probabilities (softmax over the classes)."""

    image: str
    group: str
    probs: np.ndarray

    def top(self) -> int:
        return int(np.argmax(self.probs))


@dataclass(frozen=True)
class AuditSummary:
    """Per group: `sizes` (G,) images, `counts` (G, C) how often each class was the top class,
    `mean_probs` (G, C) mean probability of each class; `chi2` tests counts for independence."""

    class_names: tuple[str, ...]
    groups: tuple[str, ...]
    sizes: np.ndarray
    counts: np.ndarray
    mean_probs: np.ndarray
    chi2: ChiSquare

    @property
    def shares(self) -> np.ndarray:
        """(G, C) fraction of each group's images with that top class."""
        return self.counts / np.maximum(self.sizes[:, None], 1)

    def table(self) -> str:
        """A plain-text table: one line per group and one for all images, then the test."""
        names = self.class_names
        total = self.counts.sum(axis=0)
        n = int(self.sizes.sum())
        overall = (self.mean_probs * self.sizes[:, None]).sum(axis=0) / max(n, 1)
        rows = [(g, int(s), c, m) for g, s, c, m in zip(self.groups, self.sizes, self.counts, self.mean_probs)]
        if len(self.groups) > 1:
            rows.append(("(all)", n, total, overall))
        head = ["group", "n"] + [f"top {x}" for x in names] + [f"mean p {x}" for x in names]
        body = [[g, str(s)] + [f"{int(k)} ({k / max(s, 1):.0%})" for k in c] + [f"{p:.3f}" for p in m] for g, s, c, m in rows]
        widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
                 for r in [head] + body]
        return "\n".join(lines + [self.chi2.describe()])


def summarise(rows: Sequence[AuditRow], class_names: Sequence[str]) -> AuditSummary:
    """Rows -> per-group counts, mean probabilities and the chi-square test (groups sorted)."""
    groups = tuple(sorted({r.group for r in rows}))
    index = {g: i for i, g in enumerate(groups)}
    c = len(class_names)
    sizes = np.zeros(len(groups), np.int64)
    counts = np.zeros((len(groups), c), np.int64)
    sums = np.zeros((len(groups), c), np.float64)
    for r in rows:
        g = index[r.group]
        sizes[g] += 1
        counts[g, r.top()] += 1
        sums[g] += r.probs
    mean_probs = sums / np.maximum(sizes[:, None], 1)
    return AuditSummary(tuple(class_names), groups, sizes, counts, mean_probs, chi_square_independence(counts))


# -- outputs ----------------------------------------------------------------------------------
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


def rows_from(classifications: Iterable[Any], images: Sequence[str], groups: Mapping[str, str] | None) -> list[AuditRow]:
    """`Classification`s of `images` (same order) -> rows; group `all` without a groups map."""
    return [AuditRow(p, groups[p] if groups is not None else NO_GROUP, np.asarray(res.probs, np.float32))
            for p, res in zip(images, classifications)]


def audit(images: str | Path | Sequence[str], classes: str | Iterable[str], model: Any = "clip-b32",
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
            raise GroupsFileError(f"groups mapping has no group for {len(missing)} image(s) ({_first(missing)})")
    classifier = model if isinstance(model, Classifier) else Classifier.from_pretrained(model, device=device, **overrides)
    rows = rows_from(classifier.classify_batch(paths, names), paths, groups)
    return AuditReport(tuple(rows), summarise(rows, names))
