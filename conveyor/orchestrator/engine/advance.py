"""One advancing pass over a run: queue what is ready, skip or cancel what cannot run,
settle the run when nothing is left. Runs inside the run's transaction (``RunTransaction``).

A step's ``if``/``skip_if`` is never evaluated there: a template may take up to its
budget (``CONVEYOR_TEMPLATE_MAX_SECONDS``), and the transaction holds the run's row lock,
which every worker finishing a step of the run waits for. A ready step with a condition
and no verdict for what it would see stays ``pending`` and is noted; once the
transaction is over, :meth:`Advance.decide` evaluates the noted conditions from plain
reads, and the next pass applies each verdict only if the outputs and the failing step
it was evaluated against are still the ones the locked transaction reads (else it is
noted again and evaluated anew). ``Runtime.write`` does that after every transaction.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.engine.run_state import RunState
from conveyor.orchestrator.engine.variables import Masker, condition_context
from conveyor.orchestrator.errors import ConveyorError, TemplateError
from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import RunRecord, StepRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import RunTransaction, Store

S = StepStatus


@dataclass(frozen=True)
class Verdict:
    """A condition evaluated outside the run's lock, and the state it saw."""

    seen: str  # fingerprint of the outputs and failing step it was evaluated against
    skip: str | None = None  # why the step is skipped
    error: str | None = None  # why it fails (masked)


#: Verdicts by step key, for one run.
Verdicts = Mapping[str, Verdict]


def seen(plan: ExecutionPlan, key: str, outputs: Mapping[str, Any], failing: str | None) -> str:
    """What step ``key``'s condition depends on besides the run itself (which never
    changes): the outputs of the steps it comes after, which are final, and the failing
    step. Other steps' outputs may or may not be there yet, as before."""
    before, todo = set(), list(plan.step(key).needs)
    while todo:
        need = todo.pop()
        if need not in before:
            before.add(need)
            todo.extend(plan.step(need).needs)
    mine = {k: v for k, v in outputs.items() if k in before}
    text = json.dumps([mine, failing], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Advance:
    """The advancing pass of ``Runtime``: plans, templates and secrets come from it."""

    def __init__(
        self,
        plan: Callable[[RunRecord], ExecutionPlan],
        templates: TemplateEngine,
        secrets: Callable[[str], dict[str, str]],
    ) -> None:
        self.plan, self.templates, self.secrets = plan, templates, secrets
        #: Steps left pending for their condition, by run id, to evaluate after commit.
        self._noted: dict[str, set[str]] = {}
        #: Conditions a thread of this process is evaluating now: not twice at once.
        self._evaluating: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(
        self,
        tx: RunTransaction,
        changed: str | Sequence[str] | None = None,
        verdicts: Verdicts | None = None,
    ) -> None:
        """Start what is ready, cancel what cannot run, settle the run.

        After successes (``changed``) only those steps' dependents can have become
        ready, so only they and their needs are read, and the run settles from its
        counts: a step costs the same in a run of 10 steps or 10,000. Anything else (a
        failure, a first pass) reads every step. ``verdicts``: the
        conditions :meth:`decide` evaluated since (see the module docstring).
        """
        if tx.run.status.terminal:
            return
        plan = self.plan(tx.run)
        counts = tx.status_counts()  # kept on the run's row: no step is read for them
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
        look = _Look(tx, verdicts or {})
        for plan_step in candidates:
            step = state.steps[plan_step.key]
            pending = step.status == S.PENDING and state.needs_done(plan_step)
            if pending and self._start_or_skip(tx, state, plan_step, step, look):
                ready.append(step)
        # Queued together: one round trip however many there are (a fan-out, a start).
        state.queue_all(tx, ready)
        if state.failing and candidates is not plan.steps:
            self(tx, verdicts=verdicts)  # a condition failed: see the whole run again
            return
        if state.failing:
            self._cancel_queued(tx, state, {s.key for s in ready})
        self._settle_run(tx, state)

    def _start_or_skip(
        self,
        tx: RunTransaction,
        state: RunState,
        plan_step: PlanStep,
        step: StepRecord,
        look: _Look,
    ) -> bool:
        """Cancel, fail or skip a step whose needs are done; True when it is to be queued."""
        broken = state.broken_need(plan_step)
        if (state.failing or broken) and not plan_step.runs_on_failure:
            # Name the step that failed, not a need that was only cancelled because of it.
            reason = f"not run: step {state.failing or broken!r} failed"
            state.move(tx, step, S.CANCELLED, reason)
            return False
        if plan_step.if_ is None and plan_step.skip_if is None:
            return True
        verdict = look.verdict(state.plan, step.key, state.failing)
        if verdict is None:  # evaluated after this transaction, outside the lock
            self._note(tx.run.id, step.key)
            return False
        if verdict.error is not None:
            state.move(tx, step, S.FAILED, verdict.error)
            return False
        if verdict.skip:
            state.move(tx, step, S.SKIPPED, verdict.skip)
            return False
        return True

    # -- conditions, outside the lock ----------------------------------------------------

    def _note(self, run_id: str, key: str) -> None:
        with self._lock:
            self._noted.setdefault(run_id, set()).add(key)

    def noted(self, run_id: str) -> bool:
        """True when a pass left steps of ``run_id`` pending for their conditions."""
        with self._lock:
            return bool(self._noted.get(run_id))

    def decide(self, run_id: str, store: Store) -> dict[str, Verdict]:
        """Evaluate the conditions noted for ``run_id``, from reads that lock nothing.

        Call it with no transaction open; hand the verdicts to the next pass.
        """
        with self._lock:
            keys = self._noted.pop(run_id, set())
            keys -= {k for r, k in self._evaluating if r == run_id}  # its evaluator applies it
            self._evaluating.update((run_id, k) for k in keys)
        if not keys:
            return {}
        try:
            return self._decide(run_id, store, keys)
        except BaseException:
            with self._lock:  # evaluated by the next write of the run instead
                self._noted.setdefault(run_id, set()).update(keys)
            raise
        finally:
            with self._lock:
                self._evaluating.difference_update((run_id, k) for k in keys)

    def _decide(self, run_id: str, store: Store, keys: set[str]) -> dict[str, Verdict]:
        run = store.get_run(run_id)
        if run.status.terminal:
            return {}
        plan = self.plan(run)
        steps = {s.key: s for s in store.list_steps(run_id)}
        state = RunState(plan, steps, Counter(s.status for s in steps.values()))
        outputs = store.step_outputs(run_id)
        verdicts = {}
        for key in sorted(keys):
            if key in steps and steps[key].status == S.PENDING:
                fingerprint = seen(plan, key, outputs, state.failing)
                verdicts[key] = self._evaluate(run, state, plan.step(key), outputs, fingerprint)
        return verdicts

    def _evaluate(
        self,
        run: RunRecord,
        state: RunState,
        plan_step: PlanStep,
        outputs: Mapping[str, Mapping[str, Any]],
        fingerprint: str,
    ) -> Verdict:
        try:
            secrets = self.secrets(run.id)
        except ConveyorError as exc:
            return Verdict(fingerprint, error=f"step {plan_step.key!r}: condition: {exc.message}")
        context = condition_context(run, state.plan, plan_step, outputs, secrets, state.failing)
        with self.templates.scope(secrets=secrets.values()) as taint:
            try:
                return Verdict(fingerprint, skip=self._skip_reason(plan_step, context))
            except TemplateError as exc:  # the message may quote a secret, or its upper()
                masked = Masker(secrets, taint.derived)(exc.message)
                return Verdict(fingerprint, error=f"step {plan_step.key!r}: condition: {masked}")

    def _skip_reason(self, plan_step: PlanStep, context: dict[str, Any]) -> str | None:
        # Conditions see the pipeline env as steps do: with its templates rendered.
        env = self.templates.render_value(context["env"], context)
        context.update(env=env, Env=env)
        if plan_step.if_ is not None and not self.templates.evaluate(plan_step.if_, context):
            return f"`if: {plan_step.if_}` is false"
        if plan_step.skip_if is not None and self.templates.evaluate(plan_step.skip_if, context):
            return f"`skip_if: {plan_step.skip_if}` is true"
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


class _Look:
    """Verdicts as one pass may use them: only where the state they saw still holds."""

    def __init__(self, tx: RunTransaction, verdicts: Verdicts) -> None:
        self.tx, self.verdicts = tx, verdicts
        self._outputs: dict[str, dict[str, Any]] | None = None

    def verdict(self, plan: ExecutionPlan, key: str, failing: str | None) -> Verdict | None:
        found = self.verdicts.get(key)
        if found is None:
            return None
        if self._outputs is None:  # read once per pass, under the lock
            self._outputs = self.tx.outputs()
        return found if found.seen == seen(plan, key, self._outputs, failing) else None
