"""Counts behind ``/metrics``, kept as data so a scrape costs the same however long the
history is.

Workers are other processes (other hosts, even), so the numbers an API serves come from
the database, the one place that sees every run and step. Scanning ``workflow_steps``
at every scrape grows with the history, though, so the counts are kept instead: every
transition writes what it changed (``Changes``) into ``metric_changes`` in its own
transaction, and a scrape folds those rows into ``metric_counts`` and reads the sum of
both in one statement. Two API pods scraping at once each fold only the rows they
deleted, so nothing is counted twice. Writers fold too, after the commit of every
transaction whose changes pass a multiple of ``FOLD_EVERY``: with nobody scraping,
the unfolded changes stay a few thousand rows, not the whole history.

Whether a queued step is ready or waiting out a retry backoff depends on the clock, not
on a transition, so no count can keep it: the same statement also counts the queued
steps whose ``available_at`` is still ahead, by queue. It reads only queued steps, as a
range of the (status, run, queue, position) index: a cost that follows the queues'
length, not the history.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.records import StepRecord
from conveyor.orchestrator.store.schema import metric_changes, metric_counts, steps

#: Step durations (seconds) that the histogram counts up to; +Inf is implied.
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
#: Changes folded by one scrape at most; the rest are still read, and folded next time.
FOLD_LIMIT = 20_000
#: A fold is due each time this many more changes were written (``Changes.write``), so
#: changes never pile up, whether anyone scrapes or not.
FOLD_EVERY = 2_000
#: What the counts are keyed by: (kind, status, type, queue, le).
Key = tuple[str, str, str, str, str]
_KEY = ("kind", "status", "type", "queue", "le")
_ENDED = (StepStatus.SUCCEEDED, StepStatus.FAILED)
#: The ``kind`` of the rows that count queued steps still waiting out a retry backoff.
_BACKOFF = "backoff"
#: The states ``conveyor_queue_depth`` tells apart: a worker could take it now, or it
#: waits for its retry time.
READY, BACKOFF = "ready", "backoff"


def bucket_label(seconds: float, bounds: Sequence[float] = DURATION_BUCKETS) -> str:
    """The ``le`` of the smallest bucket a duration fits in (``+Inf`` past the last)."""
    at = bisect.bisect_left(bounds, seconds)
    return str(float(bounds[at])) if at < len(bounds) else "+Inf"


class Changes:
    """What a transaction did to the counts, written with it (``write``)."""

    def __init__(self) -> None:
        self.counts: defaultdict[Key, list[float]] = defaultdict(lambda: [0, 0.0])

    def add(self, key: Key, n: int, seconds: float = 0.0) -> None:
        """Count ``n`` more (or fewer) of ``key``."""
        entry = self.counts[key]
        entry[0] += n
        entry[1] += seconds

    def run_moved(self, old: RunStatus | None, new: RunStatus) -> None:
        """A run went from ``old`` (None: it is new) to ``new``."""
        if old == new:
            return
        if old is not None:
            self.add(("run", old.value, "", "", ""), -1)
        self.add(("run", new.value, "", "", ""), 1)

    def step_added(self, type_: str, queue: str) -> None:
        """A new run's step, pending."""
        self.add(("step", StepStatus.PENDING.value, type_, queue, ""), 1)

    def step_moved(self, step: StepRecord, new: StepStatus, now: datetime) -> None:
        """A step went from its status to ``new``; an attempt that ran and ended is timed."""
        if step.status == new:
            return
        self.add(("step", step.status.value, step.type, step.queue, ""), -1)
        self.add(("step", new.value, step.type, step.queue, ""), 1)
        if new in _ENDED and step.status == StepStatus.RUNNING and step.started_at is not None:
            seconds = max((now - step.started_at).total_seconds(), 0.0)
            self.add(("duration", "", step.type, step.queue, bucket_label(seconds)), 1, seconds)

    def rows(self) -> list[dict[str, Any]]:
        """The changes as rows of ``metric_changes`` (those that net to nothing left out)."""
        return [
            {**dict(zip(_KEY, key, strict=True)), "n": int(n), "seconds": seconds}
            for key, (n, seconds) in sorted(self.counts.items())
            if n or seconds
        ]

    def write(self, conn: sa.Connection) -> bool:
        """Insert the changes (in the caller's transaction) and start afresh.

        True when a fold is due (``FOLD_EVERY``): the rows' ids passed a multiple of it.
        The caller folds once its transaction has committed (``Stats.fold``), so a store
        nobody scrapes keeps only a few changes unfolded, and the scrape stays cheap.
        """
        rows = self.rows()
        self.counts.clear()
        if not rows:
            return False
        ids = conn.execute(_INSERT_CHANGES, rows).scalars().all()
        return bool(ids) and fold_due(min(ids), max(ids))


def fold_due(first: int, last: int) -> bool:
    """True when rows ``first`` to ``last`` of ``metric_changes`` (ids) pass a multiple
    of ``FOLD_EVERY``: a fold is due once the transaction that wrote them commits."""
    return last // FOLD_EVERY > (first - 1) // FOLD_EVERY


_INSERT_CHANGES = metric_changes.insert().returning(metric_changes.c.id)


@dataclass(frozen=True)
class DurationHistogram:
    """Finished attempts of one step type on one queue, by how long they ran."""

    type: str
    queue: str
    buckets: tuple[tuple[float, int], ...]  # (upper bound, attempts at or under it)
    count: int
    total: float


@dataclass(frozen=True)
class Snapshot:
    """Every count at one moment (one statement read them all)."""

    counts: dict[Key, tuple[int, float]]

    def runs_by_status(self) -> dict[str, int]:
        """How many runs are in each status."""
        return {k[1]: n for k, (n, _) in self.counts.items() if k[0] == "run" and n}

    def steps_by_status(self) -> dict[tuple[str, str, str], int]:
        """How many steps are in each (status, type, queue)."""
        return {(k[1], k[2], k[3]): n for k, (n, _) in self.counts.items() if k[0] == "step" and n}

    def queue_depth(self) -> dict[tuple[str, str], int]:
        """Queued steps by (queue, state): ``ready`` for a worker to take now, or
        ``backoff``, waiting out a retry delay. Every queue with a queued step has both."""
        queued: defaultdict[str, int] = defaultdict(int)
        for (status, _, queue), n in self.steps_by_status().items():
            if status == StepStatus.QUEUED.value:
                queued[queue] += n
        waiting = {k[3]: n for k, (n, _) in self.counts.items() if k[0] == _BACKOFF and n}
        depth: dict[tuple[str, str], int] = {}
        for queue in sorted(queued.keys() | waiting.keys()):
            backoff = min(waiting.get(queue, 0), queued[queue])
            depth[queue, READY] = queued[queue] - backoff
            depth[queue, BACKOFF] = backoff
        return depth

    def step_durations(self, bounds: Sequence[float] = DURATION_BUCKETS) -> list[DurationHistogram]:
        """A histogram per (type, queue) of every attempt that ran and ended."""
        by_series: defaultdict[tuple[str, str], list[tuple[float, int, float]]] = defaultdict(list)
        for (kind, _, type_, queue, le), (n, seconds) in self.counts.items():
            if kind == "duration" and n:
                by_series[type_, queue].append((_upper(le), n, seconds))
        found = []
        for (type_, queue), seen in sorted(by_series.items()):
            buckets = tuple(
                (bound, sum(n for upper, n, _ in seen if upper <= bound)) for bound in bounds
            )
            count = sum(n for _, n, _ in seen)
            total = sum(s for _, _, s in seen)
            found.append(DurationHistogram(type_, queue, buckets, count, total))
        return found


def _upper(le: str) -> float:
    return math.inf if le == "+Inf" else float(le)


class Stats:
    """Aggregates for ``/metrics``, from the counts the transitions keep."""

    def __init__(self, store: Connector) -> None:
        self.store = store

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        """Fold the changes written since the last scrape, then read every count, and the
        queued steps whose retry time is after ``now`` (default: the current time).

        Its cost follows how many kinds of step there are, how much changed since the
        last scrape and how many steps are queued, not how many runs the database holds.
        """
        self.fold()
        total = sa.union_all(
            sa.select(
                *(metric_counts.c[k] for k in _KEY), metric_counts.c.n, metric_counts.c.seconds
            ),
            sa.select(
                *(metric_changes.c[k] for k in _KEY), metric_changes.c.n, metric_changes.c.seconds
            ),
            queued_in_backoff(now or utcnow()),
        ).subquery()
        keys = [total.c[k] for k in _KEY]
        query = sa.select(
            *keys, sa.func.sum(total.c.n).label("n"), sa.func.sum(total.c.seconds).label("s")
        ).group_by(*keys)
        rows = self.store.rows(query)
        return Snapshot(
            {tuple(r[k] for k in _KEY): (int(r["n"] or 0), float(r["s"] or 0.0)) for r in rows}
        )

    def fold(self, limit: int = FOLD_LIMIT) -> int:
        """Move up to ``limit`` of the oldest changes into the counts; how many moved.

        The changes are deleted with ``RETURNING``: a concurrent fold (another API pod)
        waits on those rows and then skips them, so each change is added exactly once.
        """
        oldest = sa.select(metric_changes.c.id).order_by(metric_changes.c.id).limit(limit)
        delete = (
            metric_changes.delete()
            .where(metric_changes.c.id.in_(oldest.scalar_subquery()))
            .returning(
                *(metric_changes.c[k] for k in _KEY), metric_changes.c.n, metric_changes.c.seconds
            )
        )
        with self.store.writing() as conn:
            gone = conn.execute(delete).all()
            if not gone:
                return 0
            folded: defaultdict[Key, list[float]] = defaultdict(lambda: [0, 0.0])
            for row in gone:
                entry = folded[tuple(row[:5])]
                entry[0] += row.n
                entry[1] += row.seconds
            rows = [
                {**dict(zip(_KEY, key, strict=True)), "n": int(n), "seconds": s}
                for key, (n, s) in sorted(folded.items())
            ]
            conn.execute(_upsert(conn.dialect.name), rows)
        return len(gone)

    # The views ``/metrics`` reads, each from a fresh snapshot (a scrape takes one).

    def runs_by_status(self) -> dict[str, int]:
        """How many runs are in each status."""
        return self.snapshot().runs_by_status()

    def steps_by_status(self) -> dict[tuple[str, str, str], int]:
        """How many steps are in each (status, type, queue)."""
        return self.snapshot().steps_by_status()

    def queue_depth(self) -> dict[tuple[str, str], int]:
        """Queued steps by (queue, state), ``ready`` or ``backoff``."""
        return self.snapshot().queue_depth()

    def step_durations(
        self, buckets: Sequence[float] = DURATION_BUCKETS
    ) -> list[DurationHistogram]:
        """Histograms of every attempt that ran and ended (succeeded or failed)."""
        return self.snapshot().step_durations(buckets)


def queued_in_backoff(now: datetime) -> sa.Select[Any]:
    """Queued steps whose retry time is after ``now``, by queue, shaped as count rows.

    ``status = 'queued'`` is the first column of ``ix_workflow_steps_status_run``, so
    only queued steps are read, however long the history.
    """
    blank = sa.literal_column("''", sa.String)
    return (
        sa.select(
            sa.literal_column(f"'{_BACKOFF}'", sa.String).label("kind"),
            sa.literal_column(f"'{StepStatus.QUEUED.value}'", sa.String).label("status"),
            blank.label("type"),
            steps.c.queue,
            blank.label("le"),
            sa.func.count().label("n"),
            sa.literal_column("0.0", sa.Float).label("seconds"),
        )
        .where(steps.c.status == StepStatus.QUEUED.value, steps.c.available_at > now)
        .group_by(steps.c.queue)
    )


def _upsert(dialect: str) -> sa.Executable:
    """Add rows to ``metric_counts``: insert a new key, or add to the one there."""
    insert: Any = (postgresql if dialect == "postgresql" else sqlite).insert(metric_counts)
    upsert: sa.Executable = insert.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={
            "n": metric_counts.c.n + insert.excluded.n,
            "seconds": metric_counts.c.seconds + insert.excluded.seconds,
        },
    )
    return upsert


def seeded_changes(steps: Iterable[tuple[str, str]]) -> Changes:
    """The changes of a new run: running, with these (type, queue) steps pending."""
    changes = Changes()
    changes.run_moved(None, RunStatus.RUNNING)
    for type_, queue in steps:
        changes.step_added(type_, queue)
    return changes
