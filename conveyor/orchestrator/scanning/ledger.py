"""A run's findings as the findings API lists them: filtered, worst first.

Scan steps record them through ``ctx.findings`` (``store.findings.StoreLedger`` on the
execution store); this is the reading side, on the rows the store keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.orchestrator.store import findings
from conveyor.orchestrator.store.sql import SqlStore


@dataclass(frozen=True)
class FindingQuery:
    """Filters of the findings API."""

    severity: Sequence[str] = ()
    scanner: str | None = None
    step: str | None = None
    new_only: bool = False


def list_findings(store: SqlStore, run_id: str, query: FindingQuery) -> list[dict[str, Any]]:
    """A run's findings (worst first), filtered; rows as plain dicts."""
    rows = findings.finding_rows(
        store,
        run_id,
        severity=query.severity,
        scanner=query.scanner,
        step=query.step,
        new_only=query.new_only,
    )
    return sorted(rows, key=_worst_first)


def list_reports(store: SqlStore, run_id: str) -> list[dict[str, Any]]:
    """The scan steps of a run: scanner, branch, summary and gate, by step."""
    return findings.report_rows(store, run_id)


#: ``unknown`` right after ``high``: a gate treats an unrated finding as high.
_ORDER = {"critical": 0, "high": 1, "unknown": 2, "medium": 3, "low": 4, "info": 5}


def _worst_first(row: dict[str, Any]) -> tuple[int, int]:
    return (_ORDER.get(str(row["severity"]), 9), int(row["id"]))
