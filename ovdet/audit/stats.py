"""Chi-square test of independence between group and top class (scipy.stats).

With expected counts below 5 the test's approximation is poor, and `ChiSquare.warning` says
so. A small p-value shows association, not its cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_EXPECTED = 5  # the usual rule of thumb for the chi-square approximation


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

    Groups and classes with no counts are dropped first (they carry no information, and
    scipy refuses zero expected counts). No Yates continuity correction, also for 2x2 tables:
    the statistic is Pearson's, comparable across table sizes and with Cramér's V.
    """
    from scipy.stats import chi2_contingency

    table = np.asarray(counts, dtype=np.float64)
    n = int(table.sum())
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    r, c = table.shape
    if r < 2 or c < 2:
        note = "needs at least 2 groups" if r < 2 else "every image has the same top class"
        return ChiSquare(None, 0, None, n, note=note)
    result = chi2_contingency(table, correction=False)
    statistic = float(result.statistic)
    return ChiSquare(
        statistic=statistic, dof=int(result.dof), p_value=float(result.pvalue), n=n,
        cramers_v=math.sqrt(statistic / (n * (min(r, c) - 1))),
        low_expected=int((result.expected_freq < MIN_EXPECTED).sum()), cells=r * c,
    )
