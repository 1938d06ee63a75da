"""Per-image audit rows and the per-group summary (counts, mean probabilities, the test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .stats import ChiSquare, chi_square_independence

NO_GROUP = "all"  # the single group when no groups file is given


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


def rows_from(classifications: Iterable[Any], images: Sequence[str], groups: Mapping[str, str] | None) -> list[AuditRow]:
    """`Classification`s of `images` (same order) -> rows; group `all` without a groups map."""
    return [AuditRow(p, groups[p] if groups is not None else NO_GROUP, np.asarray(res.probs, np.float32))
            for p, res in zip(images, classifications)]
