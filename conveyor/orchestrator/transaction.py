"""One locked transaction on one run: the only place statuses change."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .errors import NotFound
from .records import RunRecord, StepRecord, run_from_row, step_from_row
from .schema import events, runs, steps
from .status import RunStatus, StepStatus, check_run_move, check_step_move


class RunTx:
    """A transaction holding the lock on one run's row.

    ``move_run`` and ``move_step`` are the one transition function of DESIGN §3: they
    refuse illegal moves, record an event for every move, and (for steps) only update
    a row still in the status and attempt the caller saw, which is the attempt fencing
    that makes a duplicate or stale delivery harmless.
    """

    def __init__(self, conn: sa.Connection, run_id: str, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self._pending: list[dict[str, Any]] = []
        row = (
            conn.execute(sa.select(runs).where(runs.c.id == run_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"no run {run_id}")
        self.run: RunRecord = run_from_row(row)

    def steps(self) -> list[StepRecord]:
        """Every step of the run, in plan order."""
        query = sa.select(steps).where(steps.c.instance_id == self.run.id)
        rows = self.conn.execute(query.order_by(steps.c.position)).mappings()
        return [step_from_row(r) for r in rows]

    def step(self, key: str) -> StepRecord:
        """One step of the run by key."""
        row = (
            self.conn.execute(
                sa.select(steps).where(steps.c.instance_id == self.run.id, steps.c.step_key == key)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"run {self.run.id} has no step {key!r}")
        return step_from_row(row)

    def move_run(self, new: RunStatus, *, error: str | None = None, **payload: Any) -> None:
        """Change the run's status (checked), recording ``run.<status>``."""
        status = check_run_move(self.run.status, new)
        values: dict[str, Any] = {"status": status.value, "updated_at": self.now}
        values["completed_at"] = self.now if status.terminal else None
        values["error"] = error
        self.conn.execute(runs.update().where(runs.c.id == self.run.id).values(**values))
        self.run = _replace_run(self.run, status, error, values["completed_at"])
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
        status = check_step_move(step.status, new)
        result = self.conn.execute(
            steps.update()
            .where(
                steps.c.id == step.id,
                steps.c.status == step.status.value,
                steps.c.attempts == step.attempts,
            )
            .values(status=status.value, **fields)
        )
        if result.rowcount != 1:
            return False
        payload = {"attempt": fields.get("attempts", step.attempts), **(event or {})}
        self.event(f"step.{status.value}", step.key, **payload)
        return True

    def update_step(self, step: StepRecord, **fields: Any) -> None:
        """Change a step's fields without changing its status."""
        self.conn.execute(steps.update().where(steps.c.id == step.id).values(**fields))

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
        """Number the pending events after the run's last one and write them."""
        if not self._pending:
            return
        base = self.run.event_seq
        for offset, row in enumerate(self._pending, start=1):
            row["seq"] = base + offset
        self.conn.execute(events.insert(), self._pending)
        self.conn.execute(
            runs.update()
            .where(runs.c.id == self.run.id)
            .values(event_seq=base + len(self._pending), updated_at=self.now)
        )
        self.run = _with_seq(self.run, base + len(self._pending))
        self._pending = []


def _replace_run(
    run: RunRecord, status: RunStatus, error: str | None, completed: datetime | None
) -> RunRecord:
    return replace(run, status=status, error=error, completed_at=completed)


def _with_seq(run: RunRecord, seq: int) -> RunRecord:
    return replace(run, event_seq=seq)
