"""``MemoryStore``: the execution store in memory, with the semantics of ``SqlStore``.

One lock per run stands for the run row's lock: every transaction on a run holds it,
so concurrent writers of a run serialise as they do on the database, and the run's
event sequence has no gaps. Reads never wait: they see what the last commit published.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.clock import new_id, utcnow
from conveyor.orchestrator.errors import (
    CONFLICTING_WRITE,
    Conflict,
    NotFound,
    NothingToClaim,
    StoreUnavailable,
)
from conveyor.orchestrator.scanning.history import MemoryLedger
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.logchunks import DEFAULT_MAX_BYTES, Kept, line_id, pack
from conveyor.orchestrator.store.records import (
    EventRecord,
    LogRecord,
    NewRun,
    RunRecord,
    StepRecord,
)
from conveyor.orchestrator.testing.rows import (
    PendingLine,
    RunRows,
    as_json,
    log_lines,
    new_rows,
    succeeded_outputs,
)
from conveyor.orchestrator.testing.transaction import MemoryRunTx
from conveyor.orchestrator.testing.workspaces import MemoryWorkspaceRecords

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import Store

_GOING = (RunStatus.RUNNING, RunStatus.BLOCKED)


class MemoryStore(MemoryWorkspaceRecords):
    """The in-memory twin of ``SqlStore``, for tests: same answers, same errors."""

    #: Seconds a writer waits for a run's lock before giving up (SQLite's busy timeout).
    lock_timeout = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, RunRows] = {}
        self._by_key: dict[str, str] = {}  # idempotency key -> run id
        self._step_runs: dict[str, str] = {}  # step id -> run id
        #: Definition versions: id -> (name, version, checksum); and the newest by name.
        self._definitions: dict[str, tuple[str, int, str]] = {}
        self._newest: dict[str, str] = {}
        #: Creating runs and numbering log lines; never held while waiting for a run.
        self._lock = threading.Lock()
        self._chunk_ids = itertools.count(1)
        #: Log kept per step attempt, as ``SqlStore.log_max_bytes``.
        self.log_max_bytes = DEFAULT_MAX_BYTES
        #: The findings ledgers steps recorded into, by (run id, step key).
        self.ledgers: dict[tuple[str, str], MemoryLedger] = {}

    def succeeded_with_workspace(self, limit: int = 100) -> list[str]:
        """Runs that succeeded and still keep a workspace (``SqlStore``'s twin)."""
        with self._heads_lock:
            kept = list(self._heads)
        done = [
            r for r in kept if r in self._runs and self._runs[r].run.status == RunStatus.SUCCEEDED
        ]
        return done[:limit]

    def runs_ended(self, run_ids: Collection[str]) -> set[str]:
        """Which of ``run_ids`` are over or do not exist (``SqlStore``'s twin)."""
        return {r for r in run_ids if r not in self._runs or self._runs[r].run.status.terminal}

    @property
    def is_sqlite(self) -> bool:
        """False: this is no database at all."""
        return False

    def ensure_current(self) -> None:
        """Always ready: there is no schema to be behind."""

    def close(self) -> None:
        """Nothing to release."""

    # -- the run transaction ------------------------------------------------------------

    @contextmanager
    def transaction(
        self, run_id: str, step_key: str | None = None, claim_attempt: int | None = None
    ) -> Iterator[MemoryRunTx]:
        """Hold the run's lock and change a copy of it, published when the body ends.

        NotFound when there is no such run. With ``step_key`` and ``claim_attempt``, only
        while that step is queued at that attempt: NothingToClaim otherwise, before the
        lock is even waited for.
        """
        claim = step_key is not None and claim_attempt is not None
        rows = self._runs.get(run_id)
        if claim:
            self._check_claimable(run_id, rows, step_key, claim_attempt)
        if rows is None:
            raise NotFound(f"no run {run_id}")
        with self._locked(rows):
            if claim:  # it may have moved while this waited, as a re-checked row does
                self._check_claimable(run_id, rows, step_key, claim_attempt)
            tx = MemoryRunTx(rows, utcnow())
            yield tx  # a body that raises leaves here: its copy is dropped, a rollback
            self._number(rows, tx.lines)
            tx.commit()

    @contextmanager
    def _locked(self, rows: RunRows) -> Iterator[None]:
        if not rows.lock.acquire(timeout=self.lock_timeout):
            raise StoreUnavailable(f"run {rows.run.id} stayed locked for {self.lock_timeout:g}s")
        try:
            yield
        finally:
            rows.lock.release()

    @staticmethod
    def _check_claimable(
        run_id: str, rows: RunRows | None, key: str | None, attempt: int | None
    ) -> None:
        step = rows.steps.get(key or "") if rows is not None else None
        if step is None or (step.status, step.attempts) != (StepStatus.QUEUED, attempt):
            raise NothingToClaim(f"run {run_id} has no step {key!r} to claim")

    # -- creating runs ------------------------------------------------------------------

    def create_run(
        self, new: NewRun, start: Callable[[MemoryRunTx], object] | None = None
    ) -> RunRecord:
        """Write the definition version, the run, its steps and first event at once;
        ``start`` goes on in the same transaction (see ``SqlStore.create_run``)."""
        if len({s.key for s in new.steps}) != len(new.steps):
            raise Conflict(CONFLICTING_WRITE)
        with self._lock:
            earlier = self._by_key.get(new.idempotency_key or "")
            if earlier is not None:
                return self._runs[earlier].run
            definition_id, version = self._definition_of(new)
            rows = new_rows(new, definition_id, utcnow())
            tx = MemoryRunTx(rows, rows.run.created_at)
            tx.event("run.created", pipeline=new.pipeline, version=version, steps=len(new.steps))
            if start is not None:
                start(tx)
            tx.commit()
            self._runs[rows.run.id] = rows
            self._step_runs |= {s.id: rows.run.id for s in rows.steps.values()}
            if new.idempotency_key:
                self._by_key[new.idempotency_key] = rows.run.id
        return rows.run

    def _definition_of(self, new: NewRun) -> tuple[str, int]:
        """(id, version) of the definition a new run points at."""
        if new.definition_id is None:
            return self._version(new.pipeline, new.source)
        found = self._definitions.get(new.definition_id)
        if found is None:
            raise NotFound(f"no pipeline definition {new.definition_id}")
        return new.definition_id, found[1]

    def _version(self, name: str, source: str) -> tuple[str, int]:
        """The newest version of ``name`` when its source is the same, else a new one."""
        checksum = hashlib.sha256(source.encode()).hexdigest()
        newest = self._newest.get(name)
        if newest is not None:
            _, version, same = self._definitions[newest]
            if same == checksum:
                return newest, version
        version = 1 if newest is None else self._definitions[newest][1] + 1
        definition_id = new_id()
        self._definitions[definition_id] = (name, version, checksum)
        self._newest[name] = definition_id
        return definition_id, version

    # -- reads of runs ------------------------------------------------------------------

    def _all(self) -> list[RunRows]:
        with self._lock:
            return list(self._runs.values())

    def _rows(self, run_id: str) -> RunRows:
        rows = self._runs.get(run_id)
        if rows is None:
            raise NotFound(f"no run {run_id}")
        return rows

    def run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run created with this idempotency key, if any."""
        run_id = self._by_key.get(key)
        return None if run_id is None else self._runs[run_id].run

    def get_run(self, run_id: str) -> RunRecord:
        """One run by its full id."""
        return self._rows(run_id).run

    def find_run(self, ref: str) -> RunRecord:
        """One run by its id or a unique prefix of it (at least 4 characters)."""
        if ref in self._runs:
            return self._runs[ref].run
        found = [r.run for r in self._all() if len(ref) >= 4 and r.run.id.startswith(ref)][:5]
        if not found:
            raise NotFound(f"no run {ref}")
        if len(found) > 1:
            raise Conflict(f"run id {ref} is ambiguous: {', '.join(r.id for r in found)}")
        return found[0]

    def list_runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        pipeline: str | None = None,
        before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Newest runs first, filtered; ``after`` is the (created_at, id) a page ended at."""
        runs = sorted((r.run for r in self._all()), key=lambda r: (r.created_at, r.id))
        runs.reverse()  # newest first, ties by id descending, as the SQL store orders them
        found = [
            r
            for r in runs
            if (status is None or r.status == status)
            and (pipeline is None or r.pipeline == pipeline)
            and (before is None or r.created_at < before)
            and (after is None or _after(r, *after))
        ]
        return found[:limit]

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The compiled plan a run executes (JSON), as a fresh copy."""
        plan: dict[str, Any] = as_json(self._rows(run_id).plan)
        return plan

    def latest_run_id(
        self, pipeline: str, status: str, *, before: datetime | None = None
    ) -> str | None:
        """The newest run of ``pipeline`` in ``status`` (created before ``before``)."""
        found = [
            r.run
            for r in self._all()
            if r.run.pipeline == pipeline
            and r.run.status == status
            and (before is None or r.run.created_at < before)
        ]
        return max(found, key=lambda r: r.created_at).id if found else None

    def sealed_secrets(self, run_id: str) -> str | None:
        """The run's secrets as the Vault sealed them, or None when it was given none."""
        rows = self._runs.get(run_id)
        return None if rows is None else rows.sealed

    # -- reads of steps, events and logs ------------------------------------------------

    def _steps(self, run_id: str) -> list[StepRecord]:
        rows = self._runs.get(run_id)
        return [] if rows is None else list(rows.steps.values())

    def step_outputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        return succeeded_outputs(self._steps(run_id))

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The steps of a run in plan order."""
        return self._steps(run_id)

    def get_step(self, run_id: str, step_key: str) -> StepRecord:
        """One step of a run by key."""
        for step in self._steps(run_id):
            if step.key == step_key:
                return step
        raise NotFound(f"run {run_id} has no step {step_key!r}")

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """Events of a run with a sequence number above ``after``."""
        rows = self._runs.get(run_id)
        return [] if rows is None else [e for e in list(rows.events) if e.seq > after]

    def findings_ledger(self, run_id: str, step_key: str, pipeline: str) -> MemoryLedger:
        """An in-memory ledger per step: it keeps what the step records, with no history."""
        with self._lock:
            return self.ledgers.setdefault((run_id, step_key), MemoryLedger())

    def last_event(
        self, run_id: str, type_: str, *, since: datetime | None = None
    ) -> EventRecord | None:
        """The run's newest event of one type (written at or after ``since``), if any."""
        found = [
            e
            for e in self.list_events(run_id)
            if e.type == type_ and (since is None or e.created_at >= since)
        ]
        return found[-1] if found else None

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
        return log_lines(self._runs.get(run_id), step_key, attempt, after_id)[: max(limit, 0)]

    def iter_logs(
        self,
        run_id: str,
        step_key: str | None = None,
        *,
        after_id: int = 0,
        attempt: int | None = None,
    ) -> Iterator[LogRecord]:
        """Log lines in order, as they are consumed."""
        return iter(log_lines(self._runs.get(run_id), step_key, attempt, after_id))

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last ``lines`` lines of a step's log (of one attempt), oldest first."""
        found = log_lines(self._runs.get(run_id), step_key, attempt)
        return found[len(found) - lines :] if lines > 0 else []

    # -- what the reconciler looks for ----------------------------------------------------

    def overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        """Runs still going whose deadline has passed."""
        runs = (r.run for r in self._all())
        found = [r.id for r in runs if r.status in _GOING and r.deadline and r.deadline < now]
        return found[:limit]

    def expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of running steps whose worker stopped renewing its lease."""
        found = [
            (s.run_id, s.key)
            for s in _every_step(self._all())
            if s.status == StepStatus.RUNNING and s.lease_expires_at and s.lease_expires_at < now
        ]
        return found[:limit]

    def stalled_runs(self, before: datetime, limit: int = 500) -> list[str]:
        """Runs going, unchanged since before ``before``, with no step queued, running or
        blocked: nothing will move them on but an advance."""
        moving = {StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.BLOCKED}
        found = [
            rows.run
            for rows in self._all()
            if rows.run.status == RunStatus.RUNNING
            and rows.run.updated_at < before
            and not any(s.status in moving for s in rows.steps.values())
        ]
        found.sort(key=lambda r: r.updated_at)
        return [r.id for r in found[:limit]]

    def stale_queued(self, before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of steps queued (and due) since before ``before``, oldest first."""
        found = [
            s
            for s in _every_step(self._all())
            if s.status == StepStatus.QUEUED and (s.available_at is None or s.available_at < before)
        ]
        # Postgres sorts NULLs last, and Postgres is what the reconciler runs against.
        found.sort(key=lambda s: (s.available_at is None, s.available_at or before))
        return [(s.run_id, s.key) for s in found[:limit]]

    # -- writes outside a run transaction ---------------------------------------------------

    def append_logs(
        self, run_id: str, step_key: str, attempt: int, lines: Sequence[tuple[str, str]]
    ) -> None:
        """Append (stream, text) lines to a step's log; the run's lock is not needed."""
        if not lines:
            return
        rows = self._runs.get(run_id)
        if rows is None:  # the foreign key refuses it
            raise Conflict(CONFLICTING_WRITE)
        now = utcnow()
        self._number(rows, [(step_key, attempt, stream, text, now) for stream, text in lines])

    def _number(self, rows: RunRows, lines: Sequence[PendingLine]) -> None:
        """Pack log lines into chunks under the attempt's cap, as SQL does, and keep them."""
        if not lines:
            return
        with self._lock:
            for (key, attempt), group in itertools.groupby(lines, key=lambda x: (x[0], x[1])):
                written = list(group)
                self._keep(
                    rows, key, attempt, [(s, t) for _, _, s, t, _ in written], written[-1][4]
                )

    def _keep(
        self, rows: RunRows, key: str, attempt: int, lines: list[tuple[str, str]], now: datetime
    ) -> None:
        found = rows.last_chunks.get((key, attempt))
        appended = pack(found[1].state if found else Kept(), lines, self.log_max_bytes)
        if appended.marker is not None and found is not None:
            chunk_id, marker = found
            grown = replace(
                marker,
                last_line=appended.marker.last_line,
                dropped_bytes=appended.marker.dropped_bytes,
            )
            rows.last_chunks[key, attempt] = (chunk_id, grown)
            at = next(i for i, x in enumerate(rows.logs) if x.id == line_id(chunk_id, 0))
            stream, text = grown.texts()[0]
            rows.logs[at] = replace(rows.logs[at], stream=stream, text=text)
        for chunk in appended.chunks:
            chunk_id = next(self._chunk_ids)
            rows.last_chunks[key, attempt] = (chunk_id, chunk)
            rows.logs += [
                LogRecord(line_id(chunk_id, place), key, attempt, stream, text, now)
                for place, (stream, text) in enumerate(chunk.texts())
            ]

    def renew_leases(self, step_ids: Sequence[str], owner: str, until: datetime) -> dict[str, str]:
        """Extend the leases of running steps this owner holds; the status of each step."""
        wanted = set(step_ids)
        found: dict[str, str] = {}
        for run_id in {self._step_runs[i] for i in wanted if i in self._step_runs}:
            rows = self._runs[run_id]
            with self._locked(rows):  # a row lock per step, on the database
                rows.steps = {k: _renewed(s, wanted, owner, until) for k, s in rows.steps.items()}
                cancelled = rows.run.status == RunStatus.CANCELLED
                for step in rows.steps.values():
                    if step.id in wanted:
                        found[step.id] = "cancelled" if cancelled else step.status.value
        return found


def _after(run: RunRecord, at: datetime, last_id: str) -> bool:
    """True when ``run`` comes after (at, last_id) in ``list_runs``' order."""
    return run.created_at < at or (run.created_at == at and run.id < last_id)


def _every_step(runs: Iterable[RunRows]) -> Iterator[StepRecord]:
    for rows in runs:
        yield from rows.steps.values()


def _renewed(step: StepRecord, ids: set[str], owner: str, until: datetime) -> StepRecord:
    if step.id in ids and step.status == StepStatus.RUNNING and step.lease_owner == owner:
        return replace(step, lease_expires_at=until)
    return step


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real store
    _STORE: type[Store] = MemoryStore
