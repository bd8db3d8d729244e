"""Statuses of runs and steps, and the one function that changes them."""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition


class RunStatus(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    BLOCKED = "blocked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when nothing more will happen without a retry."""
        return self in RUN_TERMINAL


class StepStatus(StrEnum):
    """Where a step is."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when the step will not run again without a retry of the run."""
        return self in STEP_TERMINAL


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
STEP_TERMINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)

S = StepStatus
R = RunStatus

#: Every legal step move. ``running -> queued`` is a retry or a reclaimed lease;
#: ``failed/cancelled -> pending`` is a retry of the whole run.
STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.SKIPPED, S.CANCELLED, S.FAILED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED, S.BLOCKED, S.CANCELLED}),
    S.BLOCKED: frozenset({S.QUEUED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
    S.SUCCEEDED: frozenset(),
    S.SKIPPED: frozenset(),
}

RUN_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    R.RUNNING: frozenset({R.BLOCKED, R.SUCCEEDED, R.FAILED, R.CANCELLED}),
    R.BLOCKED: frozenset({R.RUNNING, R.SUCCEEDED, R.FAILED, R.CANCELLED}),
    R.FAILED: frozenset({R.RUNNING}),
    R.CANCELLED: frozenset({R.RUNNING}),
    R.SUCCEEDED: frozenset(),
}


def check_step_move(current: StepStatus | str, new: StepStatus | str) -> StepStatus:
    """Return ``new`` as a StepStatus if ``current -> new`` is legal, else raise."""
    cur, nxt = StepStatus(current), StepStatus(new)
    if nxt not in STEP_MOVES[cur]:
        raise IllegalTransition(f"step cannot go from {cur.value} to {nxt.value}")
    return nxt


def check_run_move(current: RunStatus | str, new: RunStatus | str) -> RunStatus:
    """Return ``new`` as a RunStatus if ``current -> new`` is legal, else raise."""
    cur, nxt = RunStatus(current), RunStatus(new)
    if nxt not in RUN_MOVES[cur]:
        raise IllegalTransition(f"run cannot go from {cur.value} to {nxt.value}")
    return nxt
