"""Auditing zero-shot predictions for skew across groups of images.

    from ovdet.audit import audit
    report = audit("faces/", "doctor,nurse", groups="groups.csv")   # CLIP clip-b32 by default
    print(report.summary.table())
    report.write("runs/audit/exp")   # predictions.csv, summary.csv, chart.png

Every image is classified with CLIP (prompt templates as in `classify`); per group we count
how often each class is the top class and average each class's probability. A chi-square test
of independence (top class x group) says whether the differences between groups are larger
than chance would make them at this sample size; with expected counts below 5 the test's
approximation is poor, and the report says so. A small p-value shows association, not its
cause: the groups may differ in pose, lighting or clothing as much as in who is pictured.

Modules, one job each: `groups` (the groups CSV), `stats` (the chi-square test, scipy),
`summary` (per-image rows, per-group summary), `outputs` (CSV files and chart), `report`
(`audit()` and `AuditReport`), `command` (`ovdet audit`). The names below load on first use,
so registering the `ovdet audit` command imports neither numpy's users nor scipy.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "audit": "report", "AuditReport": "report",
    "AuditRow": "summary", "AuditSummary": "summary", "summarise": "summary", "rows_from": "summary",
    "NO_GROUP": "summary",
    "ChiSquare": "stats", "chi_square_independence": "stats", "MIN_EXPECTED": "stats",
    "GroupsFileError": "groups", "read_groups": "groups",
    "write_predictions_csv": "outputs", "write_summary_csv": "outputs", "bar_chart": "outputs",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ovdet.audit.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ovdet.audit' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
