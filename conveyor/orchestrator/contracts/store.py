"""The execution store as a seam: the ``Store`` and the ``RunTransaction`` it yields.

SQL implements it (``conveyor.orchestrator.store.sql``), and so does the in-memory twin
(``conveyor.orchestrator.testing``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal, Protocol, runtime_checkable

from conveyor.orchestrator.contracts.steps import StepRef
from conveyor.orchestrator.scanning.history import FindingsLedger
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import (
    EventRecord,
    LogRecord,
    NewRun,
    RunRecord,
    StepRecord,
)

#: A step to send once the transaction commits: now (None), or not before the datetime.
Dispatch = tuple[StepRef, datetime | None]
#: A step to move, the fields to set with its new status, and its event's payload.
Move = tuple[StepRecord, dict[str, Any], dict[str, Any] | None]


class _Keep(Enum):
    KEEP = "keep"


#: For ``exit_code``: leave the one the step has (a step that did not run this attempt).
KEEP: Literal[_Keep.KEEP] = _Keep.KEEP
ExitCode = int | None | Literal[_Keep.KEEP]


#: Log lines as they are written: (stream, text) each.
LogLines = Sequence[tuple[str, str]]


class RunTransaction(Protocol):
    """One run, locked, being changed: what ``Store.transaction`` yields.

    Every writer of a run serialises on its lock. ``move_run``, ``move_step`` and
    ``move_steps`` are the one transition function: they refuse illegal moves, record an
    event per move, and move a step only while it is still in the status and attempt
    the caller read (attempt fencing). Events are numbered after the run's last one when
    the transaction commits; nothing it wrote stays when its body raises.

    The named transitions (``claim`` to ``reset``) are built once on those primitives,
    in ``conveyor.orchestrator.store.transitions.Transitions``, which every
    implementation inherits; the steps they queue wait in ``sends`` for the commit.
    """

    run: RunRecord
    now: datetime
    sends: list[Dispatch]
    relaxed: bool

    def steps(self, keys: Collection[str] | None = None) -> list[StepRecord]:
        """The run's steps (or those in ``keys``) in plan order, without their outputs."""
        ...

    def queued_now(self, queue: str, types: Sequence[str], limit: int) -> list[StepRecord]:
        """Up to ``limit`` of the run's steps of ``types`` queued and due on ``queue``."""
        ...

    def status_counts(self) -> Counter[StepStatus]:
        """How many of the run's steps are in each status."""
        ...

    def relax(self) -> None:
        """Commit without waiting for the disk: only for results of brief steps."""
        ...

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        ...

    def read_ahead(self, keys: Collection[str]) -> None:
        """Read these steps at once, for the ``step`` calls that follow."""
        ...

    def step(self, key: str) -> StepRecord:
        """One step of the run by key, with everything it holds (NotFound if none)."""
        ...

    def move_run(self, new: RunStatus, *, error: str | None = None, **payload: Any) -> None:
        """Change the run's status (checked), recording ``run.<status>``."""
        ...

    def move_step(
        self,
        step: StepRecord,
        new: StepStatus,
        *,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a step still as ``step`` describes it; False when another writer came first."""
        ...

    def move_steps(self, moves: Sequence[Move], new: StepStatus) -> None:
        """Move several steps, every one still as read, or raise StepsMoved."""
        ...

    def update_run(self, **fields: Any) -> None:
        """Change the run's fields (never its status: see ``move_run``)."""
        ...

    def update_step(self, step: StepRecord, **fields: Any) -> None:
        """Change a step's fields without changing its status."""
        ...

    def append_logs(self, batches: Sequence[tuple[str, int, LogLines]]) -> None:
        """Write steps' last log lines, (key, attempt, lines) each, with their results."""
        ...

    def event(self, type_: str, step_key: str | None = None, **payload: Any) -> None:
        """Append an event; it is numbered and written when the transaction commits."""
        ...

    def flush_events(self) -> None:
        """Number the pending events after the run's last one and write them now."""
        ...

    def queue(self, steps: Sequence[StepRecord]) -> list[StepRef]:
        """Queue pending steps for their next attempt, now."""
        ...

    def claim(self, step: StepRecord, owner: str, length: timedelta) -> StepRecord | None:
        """Take a queued step for ``owner``; None when another writer moved it first."""
        ...

    def claim_all(
        self, steps: Sequence[StepRecord], owner: str, length: timedelta
    ) -> list[StepRecord]:
        """Take these queued steps for ``owner``; all or nothing."""
        ...

    def redispatch(self, step: StepRecord) -> StepRef:
        """Send a queued step again; its status stays."""
        ...

    def succeed(self, done: Sequence[tuple[StepRecord, Mapping[str, Any]]]) -> None:
        """Record running steps' successes with their outputs."""
        ...

    def fail(
        self,
        step: StepRecord,
        error: str,
        *,
        exit_code: ExitCode = ...,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Fail a step: an attempt that ended badly, or a step that cannot run."""
        ...

    def retry(
        self,
        step: StepRecord,
        error: str,
        *,
        delay: float,
        exit_code: int | None = None,
        event: dict[str, Any] | None = None,
    ) -> StepRef:
        """Queue a failed attempt's step again, ``delay`` seconds from now."""
        ...

    def requeue(self, step: StepRecord, reason: str) -> StepRef:
        """Queue again, now, a running step whose worker is gone."""
        ...

    def cancel(
        self,
        step: StepRecord,
        reason: str,
        *,
        exit_code: ExitCode = ...,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Cancel a step, whether it waited, was queued or was running."""
        ...

    def skip(self, step: StepRecord, reason: str) -> None:
        """Skip a pending step whose condition says so."""
        ...

    def reset(self, step: StepRecord, reason: str) -> None:
        """Make an ended step pending again, for a retried run."""
        ...


@dataclass(frozen=True)
class WorkspaceHead:
    """A run's newest workspace: its manifest's SHA-256 and the host that published it."""

    digest: str
    host: str


class WorkspaceHeads(Protocol):
    """Where each run's newest workspace manifest is kept, moved by compare-and-set."""

    def workspace_head(self, run_id: str) -> WorkspaceHead | None:
        """The run's newest workspace, or None before any step published one."""
        ...

    def move_workspace_head(self, run_id: str, expected: str | None, new: str, host: str) -> bool:
        """Make ``new`` the head if the head is still ``expected``; False if it moved."""
        ...

    def forget_workspace(self, run_id: str) -> WorkspaceHead | None:
        """Clear the run's head (its blobs are being removed); what it was, if anything."""
        ...

    def succeeded_with_workspace(self, limit: int = 100) -> list[str]:
        """Runs that succeeded and still keep a workspace in the artifact store."""
        ...

    def runs_ended(self, run_ids: Collection[str]) -> set[str]:
        """Which of ``run_ids`` are over or do not exist (their workspaces can go)."""
        ...


@runtime_checkable
class Store(WorkspaceHeads, Protocol):
    """The execution store: runs, their steps, events and logs (SQL, or the twin).

    Writes to a run happen in ``transaction``; the rest are reads for the engine, the
    API and the reconciler, and the two writes that need no run lock (log lines,
    leases).
    """

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite database."""
        ...

    def ensure_current(self) -> None:
        """Raise SchemaOutdated unless the store is ready for this code."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...

    def transaction(
        self, run_id: str, step_key: str | None = None, claim_attempt: int | None = None
    ) -> AbstractContextManager[RunTransaction]:
        """Lock a run and change it; events are numbered and written on commit.

        ``step_key`` names the step the work reads first. With ``claim_attempt``, only
        while that step is queued at that attempt: NothingToClaim otherwise, raised
        before anything was locked. NotFound when there is no such run.
        """
        ...

    def create_run(
        self, new: NewRun, start: Callable[[RunTransaction], object] | None = None
    ) -> RunRecord:
        """Write the definition version, the run, its steps and first event at once.

        ``start`` goes on in the same transaction, on the new run (queueing its first
        steps), so a run is never stored without them. A run with the idempotency key
        of an earlier one is that run, and ``start`` is not called.
        """
        ...

    def run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run created with this idempotency key, if any."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """One run by its full id."""
        ...

    def find_run(self, ref: str) -> RunRecord:
        """One run by its id or a unique prefix of it (at least 4 characters)."""
        ...

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
        ...

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The compiled plan a run executes (JSON)."""
        ...

    def latest_run_id(
        self, pipeline: str, status: str, *, before: datetime | None = None
    ) -> str | None:
        """The newest run of ``pipeline`` in ``status`` (created before ``before``)."""
        ...

    def sealed_secrets(self, run_id: str) -> str | None:
        """The run's secrets as the Vault sealed them, or None when it was given none."""
        ...

    def step_outputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        ...

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The steps of a run in plan order."""
        ...

    def get_step(self, run_id: str, step_key: str) -> StepRecord:
        """One step of a run by key."""
        ...

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """Events of a run with a sequence number above ``after``."""
        ...

    def last_event(
        self, run_id: str, type_: str, *, since: datetime | None = None
    ) -> EventRecord | None:
        """The run's newest event of one type (written at or after ``since``), if any."""
        ...

    def findings_ledger(self, run_id: str, step_key: str, pipeline: str) -> FindingsLedger:
        """Where one step of one run records its scan findings (``ctx.findings``)."""
        ...

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
        ...

    def iter_logs(
        self,
        run_id: str,
        step_key: str | None = None,
        *,
        after_id: int = 0,
        attempt: int | None = None,
    ) -> Iterator[LogRecord]:
        """Log lines in order, read as they are consumed: a large log is never held whole.

        Ids grow in the order lines were written; ``after_id`` goes on after one.
        """
        ...

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last ``lines`` lines of a step's log (of one attempt), oldest first."""
        ...

    def overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        """Runs still going whose deadline has passed."""
        ...

    def expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of running steps whose worker stopped renewing its lease."""
        ...

    def stalled_runs(self, before: datetime, limit: int = 500) -> list[str]:
        """Runs going (``running``), unchanged since before ``before``, with no step
        queued, running or blocked: nothing will move them on but an advance."""
        ...

    def stale_queued(self, before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of steps queued (and due) since before ``before``."""
        ...

    def append_logs(self, run_id: str, step_key: str, attempt: int, lines: LogLines) -> None:
        """Append (stream, text) lines to a step's log, outside any run transaction.

        An attempt keeps at most the store's cap of log (``CONVEYOR_LOG_MAX_BYTES``): the
        lines past it are dropped, and one marker line says how many bytes and lines.
        """
        ...

    def renew_leases(self, step_ids: Sequence[str], owner: str, until: datetime) -> dict[str, str]:
        """Extend the leases of running steps this owner holds; the status of each step.

        A step whose run was cancelled reads ``cancelled``: its worker should stop.
        """
        ...


class WorkerHosts(Protocol):
    """The worker hosts alive, each with the queues it consumes."""

    def announce_host(self, host: str, queues: Collection[str]) -> None:
        """``host`` is alive and consumes ``queues`` (each worker says only its own)."""
        ...

    def withdraw_host(self, host: str, queues: Collection[str] | None = None) -> None:
        """``host`` no longer consumes ``queues`` (None: any)."""
        ...

    def live_hosts(self, seen_since: datetime) -> dict[str, frozenset[str]]:
        """Queue name -> the hosts that said they consume it since ``seen_since``."""
        ...
