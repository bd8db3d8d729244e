"""The execution store: runs, steps, events and logs on SQLAlchemy Core.

Every write that touches a run happens in ``store.transaction(run_id)``, which locks the
run's row first. That one lock order (run, then its steps) keeps concurrent workers from
deadlocking, and makes the per-run event sequence gap-free: the sequence lives on the
locked run row and is bumped in the same transaction as the events it numbers.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.clock import new_id, utcnow
from conveyor.orchestrator.errors import Conflict, NotFound
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store import logs
from conveyor.orchestrator.store.connector import translate_errors
from conveyor.orchestrator.store.findings import StoreLedger
from conveyor.orchestrator.store.records import (
    EventRecord,
    LogRecord,
    NewRun,
    RunRecord,
    StepRecord,
    StepSeed,
    run_from_row,
    step_from_row,
)
from conveyor.orchestrator.store.schema import (
    RUN_COLUMNS,
    definitions,
    events,
    run_secrets,
    runs,
    steps,
)
from conveyor.orchestrator.store.stats import Stats, seeded_changes
from conveyor.orchestrator.store.transaction import RunTx, version_definition
from conveyor.orchestrator.store.workspaces import WorkspaceRecords

log = logging.getLogger("conveyor.store")

#: A relaxed run transaction (``RunTx.relax``) commits without waiting for the WAL flush.
#: SQLite already runs with ``synchronous=NORMAL`` (``db.py``).
_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit TO OFF")


class SqlStore(WorkspaceRecords):
    """Reads and writes of the execution log, through the engines of its ``Connector``."""

    def __init__(
        self, url: str, *, pre_ping: bool = True, log_max_bytes: int = logs.DEFAULT_MAX_BYTES
    ) -> None:
        super().__init__(url, pre_ping=pre_ping)
        #: Log kept per step attempt; past it, lines are dropped and counted by a marker.
        self.log_max_bytes = log_max_bytes

    @contextmanager
    def transaction(
        self, run_id: str, step_key: str | None = None, claim_attempt: int | None = None
    ) -> Iterator[RunTx]:
        """Lock a run and change it; events are numbered and written on commit.

        ``step_key`` names a step the work reads first: it is read with the lock. With
        ``claim_attempt``, only while it is queued at that attempt (see ``RunTx``).
        """
        with translate_errors(), self.engine.begin() as conn:
            tx = RunTx(conn, run_id, utcnow(), step_key, claim_attempt)
            tx.log_max_bytes = self.log_max_bytes
            yield tx
            tx.flush_events()
            if tx.relaxed and conn.dialect.name == "postgresql":
                conn.execute(_ASYNC_COMMIT)
        if tx.fold_due:
            self._fold_metrics()

    # -- creating runs -----------------------------------------------------------------

    def create_run(self, new: NewRun, start: Callable[[RunTx], object] | None = None) -> RunRecord:
        """Write the definition version, the run, its steps and first event at once.

        ``start`` goes on in the same transaction, the new run's row locked (queueing its
        first steps): the run is stored with them or not at all. A run with the
        idempotency key of an earlier one is that run, and ``start`` is not called.
        """
        with translate_errors(), self.engine.begin() as conn:
            if new.idempotency_key:
                existing = (
                    conn.execute(
                        sa.select(*RUN_COLUMNS).where(runs.c.idempotency_key == new.idempotency_key)
                    )
                    .mappings()
                    .first()
                )
                if existing:
                    return run_from_row(existing)
            definition_id, version = _definition_of(conn, new)
            run_id, now = new.id or new_id(), utcnow()
            conn.execute(runs.insert().values(_run_row(new, run_id, definition_id, now)))
            conn.execute(steps.insert(), [_step_row(run_id, i, s) for i, s in enumerate(new.steps)])
            if new.sealed_secrets:
                row = {"instance_id": run_id, "sealed": new.sealed_secrets, "created_at": now}
                conn.execute(run_secrets.insert().values(**row))
            tx = RunTx(conn, run_id, now)
            tx.changes = seeded_changes((s.type, s.queue) for s in new.steps)
            tx.event("run.created", pipeline=new.pipeline, version=version, steps=len(new.steps))
            if start is not None:
                tx.log_max_bytes = self.log_max_bytes
                start(tx)
            tx.flush_events()
        if tx.fold_due:
            self._fold_metrics()
        return tx.run  # read under the lock, and kept by every move since: no re-read

    def _fold_metrics(self) -> None:
        """Fold the changes behind ``/metrics`` now due, after a commit that made it due.

        Only bookkeeping: the write it follows has committed, so a fold that fails is
        logged and left to the next one (or to a scrape), never raised to the writer.
        """
        try:
            Stats(self).fold()
        except Exception as exc:  # the caller's transaction is already committed
            log.warning("could not fold the counts of /metrics: %s", exc)

    # -- reads -------------------------------------------------------------------------

    def run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run created with this idempotency key, if any."""
        row = self.first(sa.select(*RUN_COLUMNS).where(runs.c.idempotency_key == key))
        return run_from_row(row) if row else None

    def get_run(self, run_id: str) -> RunRecord:
        """One run by its full id."""
        row = self.first(sa.select(*RUN_COLUMNS).where(runs.c.id == run_id))
        if row is None:
            raise NotFound(f"no run {run_id}")
        return run_from_row(row)

    def find_run(self, ref: str) -> RunRecord:
        """One run by its id or a unique prefix of it (at least 4 characters)."""
        rows = self.rows(sa.select(*RUN_COLUMNS).where(runs.c.id == ref))
        if not rows and len(ref) >= 4:
            # autoescape: `_` and `%` in ``ref`` are characters of an id, not wildcards.
            # substr: SQLite's LIKE ignores case, an id's prefix does not.
            prefixed = sa.and_(
                runs.c.id.startswith(ref, autoescape=True),
                sa.func.substr(runs.c.id, 1, len(ref)) == ref,
            )
            if self.is_sqlite:
                # A range of the primary key (binary order there), which the case-blind
                # LIKE cannot use; Postgres has a pattern index (``schema.runs``) instead.
                prefixed = sa.and_(prefixed, runs.c.id >= ref, runs.c.id < ref + "\U0010ffff")
            rows = self.rows(sa.select(*RUN_COLUMNS).where(prefixed).limit(5))
        if not rows:
            raise NotFound(f"no run {ref}")
        if len(rows) > 1:
            raise Conflict(f"run id {ref} is ambiguous: {', '.join(r['id'] for r in rows)}")
        return run_from_row(rows[0])

    def list_runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        pipeline: str | None = None,
        before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Newest runs first (by creation, then id), optionally filtered.

        ``after`` is the (created_at, id) of the last run of a previous page: the page
        goes on from there even while new runs arrive (keyset pagination). Each filter
        has an index in this order (``schema.runs``), so a page reads about a page of
        rows however many runs there are, at any depth.
        """
        order = (runs.c.created_at.desc(), runs.c.id.desc())
        query = sa.select(*RUN_COLUMNS).order_by(*order).limit(limit)
        if status:
            query = query.where(runs.c.status == status)
        if pipeline:
            query = query.where(runs.c.pipeline == pipeline)
        if before:
            query = query.where(runs.c.created_at < before)
        if after:
            at, last_id = after
            # `<=` first: a bound the index range starts from; the `or` only sorts ties.
            query = query.where(
                runs.c.created_at <= at, sa.or_(runs.c.created_at < at, runs.c.id < last_id)
            )
        return [run_from_row(r) for r in self.rows(query)]

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The compiled plan a run executes (JSON)."""
        row = self.first(sa.select(runs.c.plan).where(runs.c.id == run_id))
        if row is None:
            raise NotFound(f"no run {run_id}")
        plan: dict[str, Any] = row["plan"]
        return plan

    def latest_run_id(
        self, pipeline: str, status: str, *, before: datetime | None = None
    ) -> str | None:
        """The newest run of ``pipeline`` in ``status`` (created before ``before``)."""
        query = (
            sa.select(runs.c.id)
            .where(runs.c.pipeline == pipeline, runs.c.status == status)
            .order_by(runs.c.created_at.desc())
            .limit(1)
        )
        if before is not None:
            query = query.where(runs.c.created_at < before)
        row = self.first(query)
        return str(row["id"]) if row else None

    def sealed_secrets(self, run_id: str) -> str | None:
        """The run's secrets as the Vault sealed them, or None when it was given none."""
        row = self.first(sa.select(run_secrets.c.sealed).where(run_secrets.c.instance_id == run_id))
        return str(row["sealed"]) if row else None

    def step_outputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        query = sa.select(steps.c.step_key, steps.c.outputs).where(
            steps.c.instance_id == run_id, steps.c.status == StepStatus.SUCCEEDED.value
        )
        return {r["step_key"]: r["outputs"] or {} for r in self.rows(query)}

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The steps of a run in plan order."""
        query = sa.select(steps).where(steps.c.instance_id == run_id).order_by(steps.c.position)
        return [step_from_row(r) for r in self.rows(query)]

    def get_step(self, run_id: str, step_key: str) -> StepRecord:
        """One step of a run by key."""
        query = sa.select(steps).where(steps.c.instance_id == run_id, steps.c.step_key == step_key)
        row = self.first(query)
        if row is None:
            raise NotFound(f"run {run_id} has no step {step_key!r}")
        return step_from_row(row)

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """Events of a run with a sequence number above ``after``."""
        query = (
            sa.select(events)
            .where(events.c.instance_id == run_id, events.c.seq > after)
            .order_by(events.c.seq)
        )
        return [_event_record(r) for r in self.rows(query)]

    def findings_ledger(self, run_id: str, step_key: str, pipeline: str) -> StoreLedger:
        """Where one step of one run records its scan findings (``ctx.findings``)."""
        return StoreLedger(self, run_id, step_key, pipeline)

    def last_event(
        self, run_id: str, type_: str, *, since: datetime | None = None
    ) -> EventRecord | None:
        """The run's newest event of one type (written at or after ``since``), if any."""
        query = (
            sa.select(events)
            .where(events.c.instance_id == run_id, events.c.type == type_)
            .order_by(events.c.seq.desc())
            .limit(1)
        )
        if since is not None:
            query = query.where(events.c.created_at >= since)
        row = self.first(query)
        return _event_record(row) if row else None

    def list_logs(
        self,
        run_id: str,
        step_key: str | None = None,
        *,
        after_id: int = 0,
        attempt: int | None = None,
        limit: int = 100_000,
    ) -> list[LogRecord]:
        """Log lines of a run (or one step) in the order they were written."""
        found = self.iter_logs(run_id, step_key, after_id=after_id, attempt=attempt)
        return list(itertools.islice(found, max(limit, 0)))

    def iter_logs(
        self,
        run_id: str,
        step_key: str | None = None,
        *,
        after_id: int = 0,
        attempt: int | None = None,
    ) -> Iterator[LogRecord]:
        """Log lines in order, read a page of chunks at a time as they are consumed."""
        return logs.lines_after(self, run_id, step_key, after_id=after_id, attempt=attempt)

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last ``lines`` lines of a step's log (of one attempt), oldest first."""
        return logs.last_lines(self, run_id, step_key, lines, attempt)

    # -- what the reconciler looks for --------------------------------------------------

    def overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        """Runs still going whose deadline has passed."""
        query = (
            sa.select(runs.c.id)
            .where(runs.c.status.in_(("running", "blocked")), runs.c.deadline < now)
            .limit(limit)
        )
        return [r["id"] for r in self.rows(query)]

    def expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of running steps whose worker stopped renewing its lease."""
        query = (
            sa.select(steps.c.instance_id, steps.c.step_key)
            .where(steps.c.status == StepStatus.RUNNING.value, steps.c.lease_expires_at < now)
            .limit(limit)
        )
        return [(r["instance_id"], r["step_key"]) for r in self.rows(query)]

    def stalled_runs(self, before: datetime, limit: int = 500) -> list[str]:
        """Runs going, unchanged since before ``before``, with no step queued, running or
        blocked: nothing will move them on but an advance (see ``Reconciler``)."""
        moving = (StepStatus.QUEUED.value, StepStatus.RUNNING.value, StepStatus.BLOCKED.value)
        busy = sa.exists().where(steps.c.instance_id == runs.c.id, steps.c.status.in_(moving))
        query = (
            sa.select(runs.c.id)
            .where(runs.c.status == RunStatus.RUNNING.value, runs.c.updated_at < before, ~busy)
            .order_by(runs.c.updated_at)
            .limit(limit)
        )
        return [r["id"] for r in self.rows(query)]

    def stale_queued(self, before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of steps queued (and due) since before ``before``."""
        query = (
            sa.select(steps.c.instance_id, steps.c.step_key)
            .where(
                steps.c.status == StepStatus.QUEUED.value,
                sa.or_(steps.c.available_at.is_(None), steps.c.available_at < before),
            )
            .order_by(steps.c.available_at)
            .limit(limit)
        )
        return [(r["instance_id"], r["step_key"]) for r in self.rows(query)]

    # -- writes outside a run transaction ----------------------------------------------

    def append_logs(
        self, run_id: str, step_key: str, attempt: int, lines: Sequence[tuple[str, str]]
    ) -> None:
        """Append (stream, text) lines to a step's log, within the attempt's cap."""
        if not lines:
            return
        with self.writing() as conn:
            logs.append(conn, run_id, [(step_key, attempt, lines)], utcnow(), self.log_max_bytes)

    def renew_leases(self, step_ids: Sequence[str], owner: str, until: datetime) -> dict[str, str]:
        """Extend the leases of running steps this owner holds.

        Returns the current status of each step's run, so the caller can notice a run
        that was cancelled while its steps were running.
        """
        if not step_ids:
            return {}
        with self.writing() as conn:
            conn.execute(
                steps.update()
                .where(
                    steps.c.id.in_(step_ids),
                    steps.c.status == StepStatus.RUNNING,
                    steps.c.lease_owner == owner,
                )
                .values(lease_expires_at=until)
            )
            rows = conn.execute(
                sa.select(steps.c.id, steps.c.status, runs.c.status.label("run_status"))
                .join(runs, runs.c.id == steps.c.instance_id)
                .where(steps.c.id.in_(step_ids))
            ).all()
        return {
            r.id: r.run_status if r.run_status == RunStatus.CANCELLED else r.status for r in rows
        }


def _definition_of(conn: sa.Connection, new: NewRun) -> tuple[str, int]:
    """(id, version) of the definition a new run points at."""
    if new.definition_id is None:
        definition_id, version, _ = version_definition(conn, new.pipeline, new.source)
        return definition_id, version
    query = sa.select(definitions.c.version).where(definitions.c.id == new.definition_id)
    found: int | None = conn.execute(query).scalar()
    if found is None:
        raise NotFound(f"no pipeline definition {new.definition_id}")
    return new.definition_id, found


def _run_row(new: NewRun, run_id: str, definition_id: str, now: datetime) -> dict[str, Any]:
    return {
        "id": run_id,
        "definition_id": definition_id,
        "pipeline": new.pipeline,
        "status": RunStatus.RUNNING.value,
        "params": new.params,
        "plan": new.plan,
        "submitted_by": new.submitted_by,
        "idempotency_key": new.idempotency_key,
        "deadline": new.deadline,
        "event_seq": 0,
        "step_counts": {StepStatus.PENDING.value: len(new.steps)} if new.steps else {},
        "created_at": now,
        "updated_at": now,
    }


def _step_row(run_id: str, position: int, seed: StepSeed) -> dict[str, Any]:
    return {
        "id": new_id(),
        "instance_id": run_id,
        "step_key": seed.key,
        "position": position,
        "type": seed.type,
        "status": StepStatus.PENDING.value,
        "attempts": 0,
        "queue": seed.queue,
    }


def _event_record(row: sa.RowMapping) -> EventRecord:
    return EventRecord(
        seq=row["seq"],
        run_id=row["instance_id"],
        step_key=row["step_key"],
        type=row["type"],
        payload=row["payload"] or {},
        created_at=row["created_at"],
    )
