"""The in-memory run transaction: ``RunTx``'s primitives on copies, published at commit.

A transaction works on its own copy of the run's record and steps (records are frozen,
so a shallow copy of the dict is a snapshot) while it holds the run's lock; ``commit``
swaps them in with its events and log lines. A body that raises never reaches
``commit``, so everything it wrote is gone, as a rolled-back SQL transaction's is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from conveyor.orchestrator.contracts import Move
from conveyor.orchestrator.errors import NotFound, StepsMoved
from conveyor.orchestrator.status import RunStatus, StepStatus, check_run_move, check_step_move
from conveyor.orchestrator.store.records import EventRecord, StepRecord
from conveyor.orchestrator.store.transitions import Transitions
from conveyor.orchestrator.testing.rows import (
    PendingLine,
    RunRows,
    as_json,
    state_only,
    step_fields,
    succeeded_outputs,
)


class MemoryRunTx(Transitions):
    """The in-memory twin of ``RunTx``: one run's copy, changed under its lock."""

    def __init__(self, rows: RunRows, now: datetime) -> None:
        super().__init__()
        self.now = now
        self.run = rows.run
        self._rows = rows
        self._steps = dict(rows.steps)
        self._pending: list[tuple[str, str | None, dict[str, Any]]] = []
        self._events: list[EventRecord] = []
        self.lines: list[PendingLine] = []

    # -- reads --------------------------------------------------------------------------

    def steps(self, keys: Collection[str] | None = None) -> list[StepRecord]:
        """The run's steps (or those in ``keys``) in plan order, without their outputs."""
        found = self._steps.values()
        return [state_only(s) for s in found if keys is None or s.key in keys]

    def queued_now(self, queue: str, types: Sequence[str], limit: int) -> list[StepRecord]:
        """Up to ``limit`` of the run's steps of ``types`` queued and due on ``queue``."""
        due = [
            state_only(s)
            for s in self._steps.values()
            if s.status == StepStatus.QUEUED
            and s.queue == queue
            and s.type in types
            and (s.available_at is None or s.available_at <= self.now)
        ]
        return due[: max(limit, 0)]

    def status_counts(self) -> Counter[StepStatus]:
        """How many of the run's steps are in each status."""
        return Counter(s.status for s in self._steps.values())

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        return succeeded_outputs(self._steps.values())

    def read_ahead(self, keys: Collection[str]) -> None:
        """Nothing to do: every read here is of the transaction's own copy."""

    def step(self, key: str) -> StepRecord:
        """One step of the run by key."""
        found = self._steps.get(key)
        if found is None:
            raise NotFound(f"run {self.run.id} has no step {key!r}")
        return found

    # -- the transition function --------------------------------------------------------

    def move_run(self, new: RunStatus, *, error: str | None = None, **payload: Any) -> None:
        """Change the run's status (checked), recording ``run.<status>``."""
        status = check_run_move(self.run.status, new)
        completed = self.now if status.terminal else None
        self.run = replace(
            self.run, status=status, error=error, completed_at=completed, updated_at=self.now
        )
        self.event(f"run.{status.value}", **({"error": error} if error else {}), **payload)

    def move_step(
        self,
        step: StepRecord,
        new: StepStatus,
        *,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Change a step's status if it is still as ``step`` describes it."""
        return self._move([(step, fields, event)], new) == 1

    def move_steps(self, moves: Sequence[Move], new: StepStatus) -> None:
        """``move_step`` for several steps: every one still as given, or StepsMoved."""
        moved = self._move(moves, new) if moves else 0
        if moved != len(moves):
            raise StepsMoved(f"{len(moves) - moved} steps changed under the run's lock")

    def _move(self, moves: Sequence[Move], new: StepStatus) -> int:
        """Move the steps still as given; how many that was (events only when all moved)."""
        for step, _, _ in moves:
            check_step_move(step.status, new)  # every move is legal, or nothing is written
        status, moved = StepStatus(new), 0
        for step, fields, _ in moves:
            current = self._steps.get(step.key)
            if current is None or current.id != step.id:
                continue
            if (current.status, current.attempts) != (step.status, step.attempts):
                continue  # the fence: another writer moved it since it was read
            self._steps[step.key] = replace(current, status=status, **step_fields(fields))
            moved += 1
        if moved == len(moves):
            for step, fields, event in moves:
                payload = {"attempt": fields.get("attempts", step.attempts), **(event or {})}
                self.event(f"step.{status.value}", step.key, **payload)
        return moved

    def update_run(self, **fields: Any) -> None:
        """Change the run's fields (never its status: see ``move_run``)."""
        if "params" in fields:
            fields["params"] = as_json(fields["params"])
        self.run = replace(self.run, **fields)

    def update_step(self, step: StepRecord, **fields: Any) -> None:
        """Change a step's fields without changing its status."""
        current = self._steps.get(step.key)
        if current is not None and current.id == step.id:
            self._steps[step.key] = replace(current, **step_fields(fields))

    # -- logs and events ----------------------------------------------------------------

    def append_logs(self, batches: Sequence[tuple[str, int, Sequence[tuple[str, str]]]]) -> None:
        """Keep steps' last log lines, (key, attempt, lines) each, for the commit."""
        for key, attempt, lines in batches:
            self.lines += [(key, attempt, stream, text, self.now) for stream, text in lines]

    def event(self, type_: str, step_key: str | None = None, **payload: Any) -> None:
        """Append an event; it is numbered when the transaction commits."""
        self._pending.append((type_, step_key, as_json(payload)))

    def flush_events(self) -> None:
        """Number the pending events after the run's last one."""
        if not self._pending:
            return
        base = self.run.event_seq
        for offset, (type_, key, payload) in enumerate(self._pending, start=1):
            numbered = EventRecord(base + offset, self.run.id, key, type_, payload, self.now)
            self._events.append(numbered)
        seq = base + len(self._pending)
        self.run = replace(self.run, event_seq=seq, updated_at=self.now)
        self._pending = []

    def commit(self) -> None:
        """Publish what the transaction wrote (its log lines are the store's to number)."""
        self.flush_events()
        self._rows.events += self._events
        self._rows.steps = self._steps
        self._rows.run = self.run
