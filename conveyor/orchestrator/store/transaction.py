"""One locked transaction on one run: the only place statuses change.

Statements are built once, at import, with bound parameters: building a SQLAlchemy
statement costs more than running it on SQLite, and these run several times per step.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.contracts import Move
from conveyor.orchestrator.errors import NotFound, NothingToClaim, StepsMoved
from conveyor.orchestrator.status import RunStatus, StepStatus, check_run_move, check_step_move
from conveyor.orchestrator.store import logs
from conveyor.orchestrator.store.bookkeeping import (
    CHANGE_COLUMNS,
    EVENT_COLUMNS,
    counts_from,
    counts_json,
    flush_statement,
)
from conveyor.orchestrator.store.records import RunRecord, StepRecord, run_from_row, step_from_row
from conveyor.orchestrator.store.schema import (
    RUN_COLUMNS,
    STEP_STATE_COLUMNS,
    definitions,
    events,
    runs,
    steps,
)
from conveyor.orchestrator.store.stats import Changes, fold_due
from conveyor.orchestrator.store.transitions import Transitions

_RUN: sa.BindParameter[str] = sa.bindparam("b_run")
#: ``FOR NO KEY UPDATE``: writers of the run serialise on it, while inserts of its log
#: lines and events elsewhere (their foreign-key checks take KEY SHARE) never wait for it.
_LOCK_RUN = sa.select(*RUN_COLUMNS).where(runs.c.id == _RUN).with_for_update(key_share=True)
#: The run's row locked and one of its steps read in the same round trip: a claim or a
#: result always starts with both. ``FOR ... OF`` locks the run only; the step row is
#: fenced by the conditional UPDATE of ``move_step``.
_STEP_PREFIX = "step__"


def _lock_run_with_step(*step_conditions: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The run locked, joined to its step ``b_key``.

    With ``step_conditions`` the join is inner: a step that does not meet them reads no
    row at all, so nothing is locked.
    """
    on = sa.and_(steps.c.instance_id == runs.c.id, steps.c.step_key == sa.bindparam("b_key"))
    joined = (
        runs.join(steps, sa.and_(on, *step_conditions))
        if step_conditions
        else runs.outerjoin(steps, on)
    )
    return (
        sa.select(*RUN_COLUMNS, *(c.label(_STEP_PREFIX + c.name) for c in steps.c))
        .select_from(joined)
        .where(runs.c.id == _RUN)
        .with_for_update(of=runs, key_share=True)
    )


_LOCK_RUN_WITH_STEP = _lock_run_with_step()
#: For a claim, the step's claimability is in the join: a duplicate or stale delivery
#: reads no row, so it takes no lock and writes nothing, not even a row lock.
_LOCK_RUN_FOR_CLAIM = _lock_run_with_step(
    # Not an index's condition (see ``_MOVE_STEP``): the step is found by its key.
    steps.c.status.concat(sa.literal_column("''")) == StepStatus.QUEUED.value,
    steps.c.attempts == sa.bindparam("b_attempt"),
)
#: A run's steps queued and due by now on one queue, of some types, in plan order: an
#: index range (``ix_workflow_steps_status_run``) read up to the limit, however large the run.
_QUEUED_NOW = (
    sa.select(*STEP_STATE_COLUMNS)
    .where(
        steps.c.instance_id == _RUN,
        steps.c.status == StepStatus.QUEUED.value,
        steps.c.queue == sa.bindparam("b_queue"),
        steps.c.type.in_(sa.bindparam("b_types", expanding=True)),
        sa.or_(steps.c.available_at.is_(None), steps.c.available_at <= sa.bindparam("b_now")),
    )
    .order_by(steps.c.position)
    .limit(sa.bindparam("b_limit"))
)
_STEPS = (
    sa.select(*STEP_STATE_COLUMNS).where(steps.c.instance_id == _RUN).order_by(steps.c.position)
)
_SOME_STEPS = _STEPS.where(steps.c.step_key.in_(sa.bindparam("b_keys", expanding=True)))
_ONE_STEP = sa.select(steps).where(
    steps.c.instance_id == _RUN, steps.c.step_key == sa.bindparam("b_key")
)
_FULL_STEPS = sa.select(steps).where(
    steps.c.instance_id == _RUN, steps.c.step_key.in_(sa.bindparam("b_keys", expanding=True))
)
#: Only for a run whose row keeps no counts yet (``step_counts`` NULL): counted once.
_COUNTS = (
    sa.select(steps.c.status, sa.func.count())
    .where(steps.c.instance_id == _RUN)
    .group_by(steps.c.status)
)
_OUTPUTS = sa.select(steps.c.step_key, steps.c.outputs).where(
    steps.c.instance_id == _RUN, steps.c.status == StepStatus.SUCCEEDED.value
)
_UPDATE_RUN = runs.update().where(runs.c.id == _RUN)
_MOVE_STEP = steps.update().where(
    steps.c.id == sa.bindparam("b_id"),
    # The fence, as an expression no index answers: the primary key finds the row. A
    # planner that thinks a status rare (statistics taken between runs) would otherwise
    # walk ``ix_workflow_steps_status_run``: every step of every run in that status.
    steps.c.status.concat(sa.literal_column("''")) == sa.bindparam("b_status"),
    steps.c.attempts == sa.bindparam("b_attempts"),
)
_UPDATE_STEP = steps.update().where(steps.c.id == sa.bindparam("b_id"))
_INSERT_EVENTS = events.insert()


def version_definition(conn: sa.Connection, name: str, source: str) -> tuple[str, int, bool]:
    """(id, version, created) of the definition ``name`` with this source.

    The latest version is reused when its source is the same; otherwise a new version
    is written, so every run points at exactly what it ran.
    """
    checksum = hashlib.sha256(source.encode()).hexdigest()
    latest = conn.execute(
        sa.select(definitions.c.id, definitions.c.version, definitions.c.checksum)
        .where(definitions.c.name == name)
        .order_by(definitions.c.version.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.checksum == checksum:
        return latest.id, latest.version, False
    version = 1 if latest is None else latest.version + 1
    definition_id = str(uuid.uuid4())
    conn.execute(
        definitions.insert().values(
            id=definition_id,
            name=name,
            version=version,
            checksum=checksum,
            definition={"source": source},
            created_at=datetime.now(UTC),
        )
    )
    return definition_id, version, True


class RunTx(Transitions):
    """A transaction holding the lock on one run's row.

    ``move_run`` and ``move_step`` are the one transition function of the execution log: they
    refuse illegal moves, record an event for every move, and (for steps) only update
    a row still in the status and attempt the caller saw, which is the attempt fencing
    that makes a duplicate or stale delivery harmless. The engine moves steps through
    the named transitions this inherits (``claim``, ``succeed``, ``retry``, ...).
    """

    def __init__(
        self,
        conn: sa.Connection,
        run_id: str,
        now: datetime,
        step_key: str | None = None,
        claim_attempt: int | None = None,
    ) -> None:
        """Lock the run; with ``step_key``, read that step in the same round trip.

        With ``claim_attempt`` too, only while that step is queued at that attempt:
        otherwise NothingToClaim is raised, before anything was locked or written.
        """
        super().__init__()
        self.conn = conn
        self.now = now
        #: What this transaction did to the counts of ``/metrics``, written with it.
        self.changes = Changes()
        #: Whether the changes written make a fold of them due (``Changes.write``).
        self.fold_due = False
        #: Log kept per step attempt (``SqlStore`` sets its own).
        self.log_max_bytes = logs.DEFAULT_MAX_BYTES
        self._pending: list[dict[str, Any]] = []
        self._ids = {"b_run": run_id}
        #: The step read with the lock (``step_key``), handed out once by ``step``.
        self._prefetched: StepRecord | None = None
        #: Steps read ahead by ``read_ahead``, each handed out once by ``step``.
        self._ahead: dict[str, StepRecord] = {}
        if step_key is None:
            row = conn.execute(_LOCK_RUN, self._ids).mappings().first()
        elif claim_attempt is not None:
            params = {**self._ids, "b_key": step_key, "b_attempt": claim_attempt}
            row = conn.execute(_LOCK_RUN_FOR_CLAIM, params).mappings().first()
            if row is None:
                raise NothingToClaim(f"run {run_id} has no step {step_key!r} to claim")
        else:
            row = (
                conn.execute(_LOCK_RUN_WITH_STEP, {**self._ids, "b_key": step_key})
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no run {run_id}")
        self.run: RunRecord = run_from_row(row)
        #: The run's steps by status, kept by ``_move`` (None: the row has no counts yet).
        self._counts = counts_from(row["step_counts"])
        #: Whether ``_counts`` changed: written to the run's row with the events.
        self._counts_changed = False
        if step_key is not None and row[_STEP_PREFIX + "id"] is not None:
            n = len(_STEP_PREFIX)
            self._prefetched = step_from_row(
                {k[n:]: v for k, v in row.items() if k.startswith(_STEP_PREFIX)}
            )
        self._postgres = conn.dialect.name == "postgresql"

    def steps(self, keys: Collection[str] | None = None) -> list[StepRecord]:
        """The run's steps (or those in ``keys``) in plan order, without their outputs."""
        if keys is None:
            rows = self.conn.execute(_STEPS, self._ids)
        else:
            rows = self.conn.execute(_SOME_STEPS, {**self._ids, "b_keys": list(keys)})
        return [step_from_row(r) for r in rows.mappings()]

    def queued_now(self, queue: str, types: Sequence[str], limit: int) -> list[StepRecord]:
        """Up to ``limit`` of the run's steps of ``types`` queued and due on ``queue``."""
        if limit <= 0 or not types:
            return []
        params = {"b_queue": queue, "b_types": list(types), "b_now": self.now, "b_limit": limit}
        rows = self.conn.execute(_QUEUED_NOW, {**self._ids, **params})
        return [step_from_row(r) for r in rows.mappings()]

    def status_counts(self) -> Counter[StepStatus]:
        """How many of the run's steps are in each status: from the run's row, read with
        its lock and kept by every move, so no step is read."""
        return +self._counted()  # a copy, without the statuses no step is in

    def _counted(self) -> Counter[StepStatus]:
        """The counts this transaction keeps; a run whose row has none is counted once."""
        if self._counts is None:
            rows = self.conn.execute(_COUNTS, self._ids)
            self._counts = Counter({StepStatus(status): count for status, count in rows})
            self._counts_changed = True
        return self._counts

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        rows = self.conn.execute(_OUTPUTS, self._ids)
        return {r.step_key: r.outputs or {} for r in rows}

    def read_ahead(self, keys: Collection[str]) -> None:
        """Read these steps in one round trip, for the ``step`` calls that follow."""
        rows = self.conn.execute(_FULL_STEPS, {**self._ids, "b_keys": list(keys)})
        self._ahead = {r["step_key"]: step_from_row(r) for r in rows.mappings()}

    def step(self, key: str) -> StepRecord:
        """One step of the run by key.

        A step read with the lock, read ahead, or queued by this transaction is handed
        out once without a read: its state is as this transaction left it (a queued
        one's other fields as ``steps`` reads them: a claim needs no more).
        """
        found, self._prefetched = self._prefetched, None
        if found is not None and found.key == key:
            return found  # read with the lock, and not changed since: nothing wrote yet
        ahead = self._ahead.pop(key, None)
        if ahead is not None:
            return ahead  # read in this transaction, and only its own move changes it
        row = self.conn.execute(_ONE_STEP, {**self._ids, "b_key": key}).mappings().first()
        if row is None:
            raise NotFound(f"run {self.run.id} has no step {key!r}")
        return step_from_row(row)

    def move_run(self, new: RunStatus, *, error: str | None = None, **payload: Any) -> None:
        """Change the run's status (checked), recording ``run.<status>``."""
        status = check_run_move(self.run.status, new)
        completed = self.now if status.terminal else None
        values = {"status": status.value, "updated_at": self.now, "completed_at": completed}
        self.conn.execute(_UPDATE_RUN, {**self._ids, **values, "error": error})
        self.changes.run_moved(self.run.status, status)
        self.run = replace(self.run, status=status, error=error, completed_at=completed)
        self.event(f"run.{status.value}", **({"error": error} if error else {}), **payload)

    def move_step(
        self,
        step: StepRecord,
        new: StepStatus,
        *,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Change a step's status if it is still as ``step`` describes it.

        Returns False (and changes nothing) when another writer got there first.
        """
        moves: list[Move] = [(step, fields, event)]
        return self._move(moves, new) == 1

    def move_steps(self, moves: Sequence[Move], new: StepStatus) -> None:
        """``move_step`` for several steps (each with its fields and event) in one round trip.

        Every step must still be as given: the run's lock keeps any other writer from
        changing a step's status, so a step that moved anyway is a broken invariant
        and the whole transaction is refused.
        """
        moved = self._move(moves, new) if moves else 0
        if moved != len(moves):
            raise StepsMoved(f"{len(moves) - moved} steps changed under the run's lock")

    def _move(self, moves: Sequence[Move], new: StepStatus) -> int:
        """Move the steps still as given; how many that was (events only when all moved)."""
        counts = self._counted()  # as before these moves
        params = []
        for step, fields, _ in moves:
            status = check_step_move(step.status, new)
            self._ahead.pop(step.key, None)
            ids = {"b_id": step.id, "b_status": step.status.value, "b_attempts": step.attempts}
            params.append({**ids, "status": status.value, **fields})
        self._prefetched = None
        moved = self.conn.execute(_MOVE_STEP, params).rowcount
        if moved == len(moves):
            for step, fields, event in moves:
                counts[step.status] -= 1
                counts[new] += 1
                if new == StepStatus.QUEUED:  # claimed next, often, in this transaction
                    self._ahead[step.key] = replace(step, status=new, **fields)
                self.changes.step_moved(step, new, self.now)
                payload = {"attempt": fields.get("attempts", step.attempts), **(event or {})}
                self.event(f"step.{new.value}", step.key, **payload)
            self._counts_changed = True
        elif moved:  # some moved, unknown which (a transaction that goes on): count again
            self._counts, self._counts_changed = None, True
        return moved

    def update_run(self, **fields: Any) -> None:
        """Change the run's fields (never its status: see ``move_run``)."""
        self.conn.execute(_UPDATE_RUN, {**self._ids, **fields})
        self.run = replace(self.run, **fields)

    def update_step(self, step: StepRecord, **fields: Any) -> None:
        """Change a step's fields without changing its status."""
        self._prefetched = None
        self._ahead.pop(step.key, None)
        self.conn.execute(_UPDATE_STEP, {"b_id": step.id, **fields})

    def append_logs(self, batches: Sequence[tuple[str, int, Sequence[tuple[str, str]]]]) -> None:
        """Write steps' last log lines, (key, attempt, lines) each, with their results."""
        logs.append(self.conn, self.run.id, batches, self.now, self.log_max_bytes)

    def event(self, type_: str, step_key: str | None = None, **payload: Any) -> None:
        """Append an event; it is numbered and written when the transaction commits."""
        self._pending.append(
            {
                "instance_id": self.run.id,
                "step_key": step_key,
                "type": type_,
                "payload": payload,
                "created_at": self.now,
            }
        )

    def flush_events(self) -> None:
        """Number the pending events after the run's last one and write them.

        The changes to the counts of ``/metrics`` and the run's step counts are written
        here too, with the moves: on Postgres in the same statement as the events.
        """
        counts = {"step_counts": counts_json(self._counts)} if self._counts_changed else {}
        self._counts_changed = False
        if not self._pending:  # no move, so no change either but a first count
            self.fold_due |= self.changes.write(self.conn)
            if counts:
                self.conn.execute(_UPDATE_RUN, {**self._ids, **counts})
            return
        base = self.run.event_seq
        for offset, row in enumerate(self._pending, start=1):
            row["seq"] = base + offset
        seq = base + len(self._pending)
        if self._postgres:
            self._flush_postgres(seq, counts)
        else:
            self.fold_due |= self.changes.write(self.conn)
            self.conn.execute(_INSERT_EVENTS, self._pending)
            bump = {"event_seq": seq, "updated_at": self.now, **counts}
            self.conn.execute(_UPDATE_RUN, {**self._ids, **bump})
        self.run = replace(self.run, event_seq=seq)
        self._pending = []

    def _flush_postgres(self, seq: int, counts: dict[str, Any]) -> None:
        """The events, the run's new ``event_seq`` and counts, and the changes of
        ``/metrics``, in one statement (``flush_statement``)."""
        changes = self.changes.rows()
        self.changes.counts.clear()
        params = {**self._ids, "b_seq": seq, "b_now": self.now}
        if counts:
            params["b_counts"] = counts["step_counts"]
        for i, row in enumerate(self._pending):
            params |= {f"{name}_{i}": row[name] for name in EVENT_COLUMNS}
        for i, row in enumerate(changes):
            params |= {f"m_{name}_{i}": row[name] for name in CHANGE_COLUMNS}
        statement = flush_statement(len(self._pending), len(changes), bool(counts))
        result = self.conn.execute(statement, params)
        if changes:
            first, last = result.one()
            self.fold_due |= fold_due(first, last)
