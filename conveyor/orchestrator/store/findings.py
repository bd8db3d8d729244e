"""Findings kept per run, in ``scan_reports`` and ``findings``: what ``fail_on: new``
compares with, and what the findings API lists.

A run's branch is its ``branch`` parameter (``conveyor run --param branch=main``, or
``"params": {"branch": "main"}`` in ``POST /api/v1/runs``); runs without one share the
branch "none". The baseline of a scan is the newest run of the same pipeline on the
same branch that succeeded, was created before this one, and recorded a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.scanning.history import Baseline
from conveyor.orchestrator.scanning.results import Finding, ScanResult
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import findings, runs, scan_reports


class StoreLedger:
    """The FindingsLedger of one step of one run, on the execution store."""

    def __init__(self, store: Connector, run_id: str, step_key: str, pipeline: str) -> None:
        self.store, self.run_id, self.step_key, self.pipeline = store, run_id, step_key, pipeline

    def baseline(self, branch: str | None) -> Baseline | None:
        """See FindingsLedger.baseline."""
        created = sa.select(runs.c.created_at).where(runs.c.id == self.run_id).scalar_subquery()
        query = (
            sa.select(runs.c.id)
            .join(scan_reports, scan_reports.c.instance_id == runs.c.id)
            .where(
                runs.c.pipeline == self.pipeline,
                runs.c.status == RunStatus.SUCCEEDED.value,
                runs.c.id != self.run_id,
                runs.c.created_at < created,
                _same_branch(branch),
            )
            .order_by(runs.c.created_at.desc())
            .limit(1)
        )
        found = self.store.first(query)
        if found is None:
            return None
        # Two reads, not one join: a clean scan is a baseline with no findings, not none.
        run_id = str(found["id"])
        prints = sa.select(findings.c.fingerprint).where(findings.c.instance_id == run_id)
        return Baseline(run_id, frozenset(r["fingerprint"] for r in self.store.rows(prints)))

    def record(self, result: ScanResult, branch: str | None) -> None:
        """See FindingsLedger.record."""
        now = utcnow()
        mine = (scan_reports.c.instance_id == self.run_id) & (
            scan_reports.c.step_key == self.step_key
        )
        with self.store.writing() as conn:
            conn.execute(scan_reports.delete().where(mine))
            conn.execute(
                findings.delete().where(
                    findings.c.instance_id == self.run_id, findings.c.step_key == self.step_key
                )
            )
            conn.execute(scan_reports.insert().values(self._report(result, branch, now)))
            rows = [self._row(f, now) for f in result.findings]
            if rows:
                conn.execute(findings.insert(), rows)

    def _report(self, result: ScanResult, branch: str | None, now: datetime) -> dict[str, Any]:
        return {
            "instance_id": self.run_id,
            "step_key": self.step_key,
            "scanner": result.scanner,
            "branch": branch,
            "summary": result.summary.model_dump(),
            "passed_gate": result.passed_gate,
            "created_at": now,
        }

    def _row(self, finding: Finding, now: datetime) -> dict[str, Any]:
        # Cut to the widths of the columns: a scanner's rule id or package name can be long.
        return {
            "instance_id": self.run_id,
            "step_key": self.step_key,
            "scanner": finding.scanner,
            "rule_id": finding.rule_id[:300],
            "severity": finding.severity.value,
            "native_severity": finding.native_severity[:50],
            "message": finding.message,
            "location": finding.location,
            "line": finding.line,
            "fingerprint": finding.fingerprint,
            "is_new": finding.new,
            "suppressed": finding.suppressed,
            "package": _cut(finding.package, 300),
            "version": _cut(finding.version, 200),
            "fixed_version": _cut(finding.fixed_version, 200),
            "created_at": now,
        }


def finding_rows(
    store: Connector,
    run_id: str,
    *,
    severity: Sequence[str] = (),
    scanner: str | None = None,
    step: str | None = None,
    new_only: bool = False,
) -> list[dict[str, Any]]:
    """A run's findings in the order they were recorded, filtered; rows as plain dicts."""
    query = sa.select(findings).where(findings.c.instance_id == run_id)
    if severity:
        query = query.where(findings.c.severity.in_(list(severity)))
    if scanner:
        query = query.where(findings.c.scanner == scanner)
    if step:
        query = query.where(findings.c.step_key == step)
    if new_only:
        query = query.where(findings.c.is_new.is_(True))
    return [dict(r) for r in store.rows(query.order_by(findings.c.id))]


def report_rows(store: Connector, run_id: str) -> list[dict[str, Any]]:
    """The scan steps of a run: scanner, branch, summary and gate, by step."""
    query = (
        sa.select(scan_reports)
        .where(scan_reports.c.instance_id == run_id)
        .order_by(scan_reports.c.step_key)
    )
    return [dict(r) for r in store.rows(query)]


def _same_branch(branch: str | None) -> sa.ColumnElement[bool]:
    if branch is None:
        return scan_reports.c.branch.is_(None)
    return scan_reports.c.branch == branch


def _cut(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


# -- the reading side: a run's findings as the findings API lists them -------------------


@dataclass(frozen=True)
class FindingQuery:
    """Filters of the findings API."""

    severity: Sequence[str] = ()
    scanner: str | None = None
    step: str | None = None
    new_only: bool = False


def list_findings(store: Connector, run_id: str, query: FindingQuery) -> list[dict[str, Any]]:
    """A run's findings (worst first), filtered; rows as plain dicts."""
    rows = finding_rows(
        store,
        run_id,
        severity=query.severity,
        scanner=query.scanner,
        step=query.step,
        new_only=query.new_only,
    )
    return sorted(rows, key=_worst_first)


def list_reports(store: Connector, run_id: str) -> list[dict[str, Any]]:
    """The scan steps of a run: scanner, branch, summary and gate, by step."""
    return report_rows(store, run_id)


#: ``unknown`` right after ``high``: a gate treats an unrated finding as high.
_ORDER = {"critical": 0, "high": 1, "unknown": 2, "medium": 3, "low": 4, "info": 5}


def _worst_first(row: dict[str, Any]) -> tuple[int, int]:
    return (_ORDER.get(str(row["severity"]), 9), int(row["id"]))
