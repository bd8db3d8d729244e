"""One advancing pass over a run: queue what is ready, skip or cancel what cannot run,
settle the run when nothing is left. Runs inside the run's transaction (``RunTransaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.orchestrator.engine.run_state import RunState
from conveyor.orchestrator.engine.variables import Masker, condition_context
from conveyor.orchestrator.errors import TemplateError
from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import RunRecord, StepRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import RunTransaction

S = StepStatus


class Advance:
    """The advancing pass of ``Runtime``: plans, templates and secrets come from it."""

    def __init__(
        self,
        plan: Callable[[RunRecord], ExecutionPlan],
        templates: TemplateEngine,
        secrets: Callable[[str], dict[str, str]],
    ) -> None:
        self.plan, self.templates, self.secrets = plan, templates, secrets

    def __call__(self, tx: RunTransaction, changed: str | Sequence[str] | None = None) -> None:
        """Start what is ready, cancel what cannot run, settle the run.

        After successes (``changed``) only those steps' dependents can have become
        ready, so only they and their needs are read: a long chain stays linear.
        Anything else (a failure, a first pass) reads every step.
        """
        if tx.run.status.terminal:
            return
        plan = self.plan(tx.run)
        counts = tx.status_counts()
        if changed is None or counts[S.FAILED] or counts[S.CANCELLED]:
            candidates = plan.steps
            state = RunState(plan, {s.key: s for s in tx.steps()}, counts)
        else:
            keys = (changed,) if isinstance(changed, str) else changed
            dependents = dict.fromkeys(d for k in keys for d in plan.dependents[k])
            candidates = tuple(plan.step(k) for k in dependents)
            wanted = {k for p in candidates for k in (p.key, *p.needs)}
            found = tx.steps(wanted) if wanted else []  # a leaf: nothing to read
            state = RunState(plan, {s.key: s for s in found}, counts)
        ready: list[StepRecord] = []
        for plan_step in candidates:
            step = state.steps[plan_step.key]
            pending = step.status == S.PENDING and state.needs_done(plan_step)
            if pending and self._start_or_skip(tx, state, plan_step, step):
                ready.append(step)
        # Queued together: one round trip however many there are (a fan-out, a start).
        state.queue_all(tx, ready)
        if state.failing and candidates is not plan.steps:
            self(tx)  # a condition failed: see the whole run again
            return
        if state.failing:
            self._cancel_queued(tx, state, {s.key for s in ready})
        self._settle_run(tx, state)

    def _start_or_skip(
        self, tx: RunTransaction, state: RunState, plan_step: PlanStep, step: StepRecord
    ) -> bool:
        """Cancel, fail or skip a step whose needs are done; True when it is to be queued."""
        broken = state.broken_need(plan_step)
        if (state.failing or broken) and not plan_step.runs_on_failure:
            # Name the step that failed, not a need that was only cancelled because of it.
            reason = f"not run: step {state.failing or broken!r} failed"
            state.move(tx, step, S.CANCELLED, reason)
            return False
        try:
            skip_reason = self._skip_reason(tx, state, plan_step)
        except TemplateError as exc:  # the message may quote a secret's value
            masked = Masker(self.secrets(tx.run.id))(exc.message)
            state.move(tx, step, S.FAILED, masked)
            return False
        if skip_reason:
            state.move(tx, step, S.SKIPPED, skip_reason)
            return False
        return True

    def _skip_reason(self, tx: RunTransaction, state: RunState, plan_step: PlanStep) -> str | None:
        if plan_step.if_ is None and plan_step.skip_if is None:
            return None
        context = condition_context(
            tx.run,
            state.plan,
            plan_step,
            tx.outputs(),
            self.secrets(tx.run.id),
            state.failing,
        )
        try:
            # Conditions see the pipeline env as steps do: with its templates rendered.
            env = self.templates.render_value(context["env"], context)
            context.update(env=env, Env=env)
            if plan_step.if_ is not None and not self.templates.evaluate(plan_step.if_, context):
                return f"`if: {plan_step.if_}` is false"
            if plan_step.skip_if is not None and self.templates.evaluate(
                plan_step.skip_if, context
            ):
                return f"`skip_if: {plan_step.skip_if}` is true"
        except TemplateError as exc:
            raise TemplateError(f"step {plan_step.key!r}: condition: {exc.message}") from None
        return None

    def _cancel_queued(self, tx: RunTransaction, state: RunState, just_queued: set[str]) -> None:
        for key, step in list(state.steps.items()):
            keep = key in just_queued or state.plan.step(key).runs_on_failure
            if step.status == S.QUEUED and not keep:
                state.move(tx, step, S.CANCELLED, f"not run: step {state.failing!r} failed")

    def _settle_run(self, tx: RunTransaction, state: RunState) -> None:
        statuses = {status for status, count in state.counts.items() if count}
        if all(s.terminal for s in statuses):
            if state.failing:
                failed = state.steps[state.failing]
                tx.move_run(
                    RunStatus.FAILED, error=f"step {failed.key!r} failed: {failed.last_error}"
                )
            else:
                tx.move_run(RunStatus.SUCCEEDED)
        elif S.BLOCKED in statuses and not statuses & {S.QUEUED, S.RUNNING}:
            if tx.run.status == RunStatus.RUNNING:
                tx.move_run(RunStatus.BLOCKED)
        elif tx.run.status == RunStatus.BLOCKED:
            tx.move_run(RunStatus.RUNNING)
