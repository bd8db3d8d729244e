"""The steps of one run as one advance pass sees and changes them."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING

from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.records import StepRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import RunTransaction

S = StepStatus


class RunState:
    """The steps of a run as one advance pass sees and changes them."""

    def __init__(
        self, plan: ExecutionPlan, steps: dict[str, StepRecord], counts: Counter[StepStatus]
    ) -> None:
        self.plan = plan
        self.steps = steps
        self.counts = counts  # of every step of the run, kept up to date by move()
        self.failing = next(
            (
                k
                for k, s in steps.items()
                if s.status == S.FAILED and plan.step(k).on_error == "stop"
            ),
            None,
        )

    def needs_done(self, plan_step: PlanStep) -> bool:
        """True when every step ``plan_step`` needs has ended."""
        return all(self.steps[n].status.terminal for n in plan_step.needs)

    def broken_need(self, plan_step: PlanStep) -> str | None:
        """A need that failed (stopping the run) or was cancelled, if any."""
        for need in plan_step.needs:
            status = self.steps[need].status
            if status == S.CANCELLED or (
                status == S.FAILED and self.plan.step(need).on_error == "stop"
            ):
                return need
        return None

    def move(self, tx: RunTransaction, step: StepRecord, new: StepStatus, reason: str) -> None:
        """End a step that will not run (cancelled, failed, skipped), keeping this view."""
        if new == S.SKIPPED:
            tx.skip(step, reason)
        elif new == S.FAILED:
            tx.fail(step, reason)
        else:
            tx.cancel(step, reason)
        self._note(step, new, step.attempts, reason)
        if new == S.FAILED and self.failing is None and self.plan.step(step.key).on_error == "stop":
            self.failing = step.key

    def queue_all(self, tx: RunTransaction, steps: list[StepRecord]) -> None:
        """Queue these pending steps in one round trip (sent once the transaction commits)."""
        tx.queue(steps)
        for step in steps:
            self._note(step, S.QUEUED, step.attempts + 1, None)

    def _note(self, step: StepRecord, new: StepStatus, attempts: int, error: str | None) -> None:
        """Keep the counts and this view of ``step`` in step with its move."""
        self.counts[step.status] -= 1
        self.counts[new] += 1
        self.steps[step.key] = replace(step, status=new, attempts=attempts, last_error=error)
