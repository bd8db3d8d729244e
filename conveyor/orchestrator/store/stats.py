"""Counts over the execution log, for metrics: computed by the database, not in Python.

Workers are other processes (other hosts, even), so the numbers an API serves come from
the store, the one place that sees every run and step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import runs, steps

#: Step durations (seconds) that the histogram counts up to; +Inf is implied.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
#: Rows counted by a grouped query, read back as ``n``.
_COUNT = sa.func.count().label("n")


@dataclass(frozen=True)
class DurationHistogram:
    """Finished attempts of one step type on one queue, by how long they ran."""

    type: str
    queue: str
    buckets: tuple[tuple[float, int], ...]  # (upper bound, attempts at or under it)
    count: int
    total: float


class Stats:
    """Aggregates for ``/metrics``."""

    def __init__(self, store: Connector) -> None:
        self.store = store

    def runs_by_status(self) -> dict[str, int]:
        """How many runs are in each status."""
        query = sa.select(runs.c.status, _COUNT).group_by(runs.c.status)
        return {r["status"]: r["n"] for r in self.store.rows(query)}

    def steps_by_status(self) -> dict[tuple[str, str, str], int]:
        """How many steps are in each (status, type, queue)."""
        query = sa.select(steps.c.status, steps.c.type, steps.c.queue, _COUNT).group_by(
            steps.c.status, steps.c.type, steps.c.queue
        )
        return {(r["status"], r["type"], r["queue"]): r["n"] for r in self.store.rows(query)}

    def queue_depth(self) -> dict[str, int]:
        """Steps waiting for a worker, by queue."""
        query = (
            sa.select(steps.c.queue, _COUNT)
            .where(steps.c.status == StepStatus.QUEUED.value)
            .group_by(steps.c.queue)
        )
        return {r["queue"]: r["n"] for r in self.store.rows(query)}

    def step_durations(
        self, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[DurationHistogram]:
        """Histograms of the last attempt of every step that ran and ended."""
        seconds = self._seconds()
        columns = [
            sa.func.sum(sa.case((seconds <= bound, 1), else_=0)).label(f"le_{i}")
            for i, bound in enumerate(buckets)
        ]
        query = (
            sa.select(
                steps.c.type, steps.c.queue, _COUNT, sa.func.sum(seconds).label("total"), *columns
            )
            .where(
                steps.c.status.in_((StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)),
                steps.c.started_at.is_not(None),
                steps.c.completed_at >= steps.c.started_at,
            )
            .group_by(steps.c.type, steps.c.queue)
        )
        return [_histogram(row, buckets) for row in self.store.rows(query)]

    def _seconds(self) -> sa.ColumnElement[Any]:
        """``completed_at - started_at`` in seconds, in this database's dialect."""
        if self.store.is_sqlite:
            days = sa.func.julianday(steps.c.completed_at) - sa.func.julianday(steps.c.started_at)
            return days * 86400.0
        return sa.extract("epoch", steps.c.completed_at - steps.c.started_at)


def _histogram(row: sa.RowMapping, bounds: Sequence[float]) -> DurationHistogram:
    cumulative = (int(row[f"le_{i}"] or 0) for i in range(len(bounds)))
    return DurationHistogram(
        type=row["type"],
        queue=row["queue"],
        buckets=tuple(zip(bounds, cumulative, strict=True)),
        count=int(row["n"]),
        total=float(row["total"] or 0.0),
    )
