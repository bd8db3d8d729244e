"""The run state machine: what is ready, claims, results, retries, cancellation.

Every method is one short transaction on one run (see ``Store.transaction``); steps
that become ready are dispatched only after that transaction commits, so a worker
never sees a step the database does not. The dispatcher is only a wake-up call: a
message that arrives twice, late, or for an attempt that is over finds nothing to
claim and does nothing.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import Dispatcher, RunTransaction, StepRef, Store
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.engine.advance import Advance
from conveyor.orchestrator.engine.attempt import Attempt, Finished, Outcome, Recorded, RunReads
from conveyor.orchestrator.engine.claims import (
    Claim,
    brief_batch,
    claim_in,
    coalesced,
    with_brief_siblings,
)
from conveyor.orchestrator.engine.vault import Vault
from conveyor.orchestrator.errors import Conflict, NotFound, NothingToClaim, SecretsUnavailable
from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import NewRun, RunRecord, StepRecord, StepSeed

S = StepStatus
T = TypeVar("T")
#: Passes that evaluate conditions after a write; past them, the next write goes on.
CONDITION_ROUNDS = 8


class Runtime:
    """Moves runs forward. Shared by the embedded engine and the Celery workers.

    Brief steps (``PlanStep.brief``: in-process, milliseconds, nothing outside the
    worker) are coalesced: those of one run that become ready together on one queue get
    one message per ``BRIEF_BATCH`` of them, and the worker that claims one takes the
    run's other queued brief steps on that queue in the same transaction, runs them one
    after the other and records them together (``record``). A message and two
    transactions per step would cost far more than such a step does. Every other step
    keeps a message of its own, so steps that do real work still spread over workers.
    """

    def __init__(
        self,
        store: Store,
        templates: TemplateEngine,
        dispatcher: Dispatcher | None = None,
        *,
        lease_seconds: float = 30.0,
        vault: Vault | None = None,
        stopping: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.templates = templates
        self.dispatcher = dispatcher
        self.lease = timedelta(seconds=lease_seconds)
        #: True once this process is shutting down (a worker's warm shutdown): it
        #: finishes what it holds and takes nothing new (``claim``, ``record``).
        self.stopping: Callable[[], bool] = stopping or _never
        #: Opened secrets of runs this process has seen (sealed in the store).
        self._secrets: dict[str, dict[str, str]] = {}
        self._plans: OrderedDict[str, ExecutionPlan] = OrderedDict()
        self._lock = threading.Lock()
        self._advance = Advance(self.plan, templates, self.secrets)

    # -- plans -------------------------------------------------------------------------

    def plan(self, run: RunRecord) -> ExecutionPlan:
        """The run's plan, parsed once per process (plans never change)."""
        return self.plan_of(run.id)

    def plan_of(self, run_id: str) -> ExecutionPlan:
        """The plan of the run ``run_id`` (NotFound when there is none), as ``plan``."""
        with self._lock:
            plan = self._plans.get(run_id)
        if plan is None:
            plan = ExecutionPlan.model_validate(self.store.get_plan(run_id))
            self._remember(run_id, plan)
        return plan

    def _remember(self, run_id: str, plan: ExecutionPlan) -> None:
        with self._lock:
            self._plans[run_id] = plan
            while len(self._plans) > 512:
                self._plans.popitem(last=False)

    # -- starting ----------------------------------------------------------------------

    def submit(
        self,
        plan: ExecutionPlan,
        source: str,
        params: Mapping[str, Any],
        *,
        secrets: Mapping[str, str] | None = None,
        submitted_by: str | None = None,
        idempotency_key: str | None = None,
        definition_id: str | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Create a run of ``plan`` and dispatch its first steps.

        ``definition_id`` names the registered version ``source`` is (running an older
        version must not make it the newest again). ``run_id``: the new run's id, when
        the caller stored something under it first (a source archive).
        """
        deadline = utcnow() + timedelta(seconds=plan.timeout) if plan.timeout else None
        sealed = self._seal(secrets) if secrets else None
        started: list[RunTransaction] = []

        def start(tx: RunTransaction) -> None:
            # Nothing of the run is visible outside this transaction yet: what advancing
            # it reads (plan, secrets) is what this process was given.
            self._remember(tx.run.id, plan)
            self._secrets[tx.run.id] = dict(secrets or {})
            started.append(tx)
            self.advance_in(tx)

        try:
            run = self.store.create_run(
                NewRun(
                    pipeline=plan.pipeline,
                    source=source,
                    plan=plan.model_dump(mode="json", by_alias=True),
                    params=dict(params),
                    steps=[StepSeed(s.key, s.type, s.queue) for s in plan.steps],
                    submitted_by=submitted_by,
                    idempotency_key=idempotency_key,
                    deadline=deadline,
                    definition_id=definition_id,
                    sealed_secrets=sealed,
                    id=run_id,
                ),
                start=start,
            )
        except BaseException:
            for tx in started:  # rolled back: there is no such run
                self._secrets.pop(tx.run.id, None)
            raise
        if not started:  # an earlier run with this idempotency key: move it on if it must
            if not run.status.terminal:
                self.advance(run.id)
            return run
        self._dispatch(started[0], ended=started[0].run.status.terminal)
        self._conditions(run.id)  # the first steps' `if:`, evaluated outside the lock
        return run

    def _seal(self, secrets: Mapping[str, str]) -> str:
        if self.vault is None:
            raise SecretsUnavailable(
                "runs with secrets need CONVEYOR_SECRET_KEY, so every worker can open them"
            )
        return self.vault.seal(secrets)

    def secrets(self, run_id: str) -> dict[str, str]:
        """The run's secrets (empty when it has none), opened once per process."""
        found = self._secrets.get(run_id)
        if found is None:
            sealed = self.store.sealed_secrets(run_id)
            if sealed is not None and self.vault is None:
                raise SecretsUnavailable("this run has secrets and CONVEYOR_SECRET_KEY is not set")
            found = self.vault.open(sealed) if sealed and self.vault else {}
            self._secrets[run_id] = found
        return found

    def advance(self, run_id: str) -> None:
        """Queue whatever became ready; finish the run when nothing is left."""
        self.write(run_id, self.advance_in)

    # -- one attempt -------------------------------------------------------------------

    def claim(self, ref: StepRef, owner: str) -> Attempt | None:
        """Take ``ref`` for this owner, or None if it is not (or no longer) queued.

        A process that is shutting down takes nothing: the message is sent again (its
        delivery is acknowledged once this returns), for a worker that stays.
        """
        if self.stopping():
            if self.dispatcher is not None:
                self.dispatcher.dispatch(ref, None)
            return None

        def work(tx: RunTransaction) -> Claim | None:
            plan = self.plan(tx.run)
            claim = claim_in(tx, ref, owner, self.lease)
            if claim is None:
                # Read as queued, yet taken by the time the lock was granted: Postgres
                # reads the step before it waits for the run's row, and gives that
                # older version of it back. The message is stale after all, and for a
                # brief step it still stands for the batch it was sent for.
                return brief_batch(tx, plan, ref, owner, self.lease)
            return with_brief_siblings(tx, plan, claim, owner, self.lease)

        try:
            claimed = self.write(ref.run_id, work, ref.step_key, claim_attempt=ref.attempt)
        except NothingToClaim:  # a duplicate or stale delivery: nothing was locked
            claimed = self._claim_brief(ref, owner)
        return self._attempt(claimed) if claimed is not None else None

    def _claim_brief(self, ref: StepRef, owner: str) -> Claim | None:
        """For a stale message of a brief step: the run's queued brief steps on its queue
        (``claims.brief_batch``), so none is left without a message."""
        try:
            plan = self.plan_of(ref.run_id)
        except NotFound:
            return None
        named = plan.by_key.get(ref.step_key)
        if named is None or not named.brief:
            return None

        def work(tx: RunTransaction) -> Claim | None:
            return brief_batch(tx, plan, ref, owner, self.lease)

        try:
            return self.write(ref.run_id, work)
        except NotFound:
            return None

    def _attempt(self, claim: Claim) -> Attempt:
        """The claimed step with what running it needs: plan, secrets, reads."""
        secrets: dict[str, str] = {}
        error = None
        try:
            secrets = self.secrets(claim.run.id)
        except SecretsUnavailable as exc:  # the attempt fails with it rather than run
            error = exc.message
        plan, reads = self.plan(claim.run), RunReads(self.store, claim.run)
        return Attempt(
            claim.run,
            claim.step,
            claim.ref,
            plan,
            reads,
            secrets,
            error,
            tuple(Attempt(c.run, c.step, c.ref, plan, reads, secrets, error) for c in claim.batch),
        )

    def record(
        self,
        finished: Sequence[Finished],
        *,
        continue_as: str | None = None,
        queues: Collection[str] | None = None,
    ) -> Recorded:
        """Record attempts of one run's steps, in order, in one transaction; move the run on.

        A success writes the step's outputs; a failure retries the step, fails it or
        (when it was cancelled, or the run is over) cancels it. With ``continue_as``, one
        step the results made ready (on one of ``queues``, or any when None) is claimed
        for that owner in the same transaction and returned: the caller runs it next,
        sparing a dispatch, a thread hop and a transaction per step of a chain. Not
        once this process is shutting down (``stopping``): then every step the results
        made ready goes out as a message, for a worker that stays.
        """
        if not finished:
            return Recorded()

        def work(tx: RunTransaction) -> tuple[Claim | None, bool]:
            self._record_in(tx, finished)
            claim = None
            # Not when this worker is to evaluate conditions next: its next step would
            # wait for them (and its lease with it); the step goes out as a message.
            if continue_as and not self.stopping() and not self._advance.noted(tx.run.id):
                claim = self._continue(tx, continue_as, queues)
            if self._only_brief(tx.run, finished, claim):
                tx.relax()
            return claim, tx.run.status.terminal

        claim, over = self.write(finished[0].ref.run_id, work, finished[0].ref.step_key)
        return Recorded(self._attempt(claim) if claim is not None else None, over)

    def _only_brief(
        self, run: RunRecord, finished: Sequence[Finished], claim: Claim | None
    ) -> bool:
        """Whether a result's transaction records and claims brief steps only: then it
        need not wait for the disk (``RunTransaction.relax``)."""
        plan = self.plan(run)
        keys = [f.ref.step_key for f in finished]
        if claim is not None:
            keys += [c.ref.step_key for c in (claim, *claim.batch)]
        return all(plan.step(key).brief for key in keys)

    def _record_in(self, tx: RunTransaction, finished: Sequence[Finished]) -> None:
        tx.append_logs([(f.ref.step_key, f.ref.attempt, f.logs) for f in finished])
        if len(finished) > 1:  # the first was read with the lock
            tx.read_ahead([f.ref.step_key for f in finished[1:]])
        succeeded: list[str] = []
        done: list[tuple[StepRecord, Mapping[str, Any]]] = []
        for one in finished:
            step = self._running(tx, one.ref)
            if step is None:
                continue
            if one.outcome is None:
                done.append((step, one.outputs or {}))
                succeeded.append(step.key)
            else:  # successes before a failure are written first, as they happened
                tx.succeed(done)
                done = []
                self._failed(tx, step, one.outcome)
        tx.succeed(done)
        if succeeded:  # what they made ready, once for all of them
            self.advance_in(tx, succeeded)

    def _failed(self, tx: RunTransaction, step: StepRecord, outcome: Outcome) -> None:
        """Cancel, retry or fail the step of an attempt that did not succeed."""
        error, code = outcome.error, outcome.exit_code
        event = {"error": error, "exit_code": code, "kind": outcome.kind}
        if outcome.kind == "cancelled" or tx.run.status.terminal:
            tx.cancel(step, error, exit_code=code, event=event)
            return
        plan_step = self.plan(tx.run).step(step.key)
        if _should_retry(plan_step, step, outcome):
            delay = plan_step.retry.delay(step.attempts)
            tx.retry(step, error, delay=delay, exit_code=code, event=event)
            return
        tx.fail(step, error, exit_code=code, event=event)
        self.advance_in(tx)

    def _continue(
        self, tx: RunTransaction, owner: str, queues: Collection[str] | None
    ) -> Claim | None:
        """Claim for ``owner`` a step this transaction made ready, if one is due now."""
        for ref, eta in list(tx.sends):
            if eta is None and (queues is None or ref.queue in queues):
                claim = claim_in(tx, ref, owner, self.lease)
                if claim is not None:
                    plan = self.plan(tx.run)
                    return with_brief_siblings(tx, plan, claim, owner, self.lease, tx.sends)
        return None

    def _running(self, tx: RunTransaction, ref: StepRef) -> StepRecord | None:
        """The step if ``ref`` still owns it (attempt fencing), else None."""
        step = tx.step(ref.step_key)
        if step.status != S.RUNNING or step.attempts != ref.attempt:
            return None
        return step

    # -- stopping ----------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel a run: steps not started are cancelled, running ones stop at their next
        heartbeat (or at once, where the caller also tells its executor)."""

        def work(tx: RunTransaction) -> None:
            if tx.run.status.terminal:
                raise Conflict(f"run {run_id} is already {tx.run.status.value}")
            self._stop_steps(tx, reason)
            tx.move_run(RunStatus.CANCELLED, error=reason)

        self.write(run_id, work)

    def expire(self, run_id: str, now: datetime | None = None) -> bool:
        """Fail a run whose timeout has passed (by ``now``); True if it did."""

        def work(tx: RunTransaction) -> bool:
            run = tx.run
            if run.status.terminal or not run.deadline or run.deadline > (now or tx.now):
                return False
            reason = f"run timed out after {format_duration(self.plan(run).timeout)}"
            self._stop_steps(tx, reason)
            tx.move_run(RunStatus.FAILED, error=reason)
            return True

        return self.write(run_id, work)

    def _stop_steps(self, tx: RunTransaction, reason: str) -> None:
        for step in tx.steps():
            if step.status in (S.PENDING, S.QUEUED, S.BLOCKED):
                tx.cancel(step, reason)

    # -- advancing ---------------------------------------------------------------------

    def advance_in(self, tx: RunTransaction, changed: str | Sequence[str] | None = None) -> None:
        """Start what is ready, cancel what cannot run, settle the run (see ``Advance``)."""
        self._advance(tx, changed)

    # -- plumbing ----------------------------------------------------------------------

    def write(
        self,
        run_id: str,
        work: Callable[[RunTransaction], T],
        step_key: str | None = None,
        claim_attempt: int | None = None,
    ) -> T:
        """Run ``work`` in a transaction on the run and return what it returns.

        The steps it queued (``RunTransaction.sends``) are dispatched after the commit.
        ``step_key``: the step ``work`` reads first, read with the run's lock; with
        ``claim_attempt``, only while it is queued at that attempt (NothingToClaim).
        Conditions (``if:``) the transaction left for later are then evaluated with no
        lock held and applied in a transaction of their own (``Advance.decide``).
        """
        result = self._write(run_id, work, step_key, claim_attempt)
        self._conditions(run_id)
        return result

    def _conditions(self, run_id: str) -> None:
        """Evaluate, outside any transaction, the conditions a pass left pending, and
        apply them in a transaction of their own (see ``engine/advance.py``)."""
        for _ in range(CONDITION_ROUNDS):  # again only when the run moved meanwhile
            if not self._advance.noted(run_id):
                return
            verdicts = self._advance.decide(run_id, self.store)
            self._write(run_id, functools.partial(self._advance, verdicts=verdicts))

    def _write(
        self,
        run_id: str,
        work: Callable[[RunTransaction], T],
        step_key: str | None = None,
        claim_attempt: int | None = None,
    ) -> T:
        with self.store.transaction(run_id, step_key, claim_attempt) as tx:
            was_terminal = tx.run.status.terminal
            result = work(tx)
            ended = tx.run.status.terminal and not was_terminal
        self._dispatch(tx, ended=ended)
        return result

    def _dispatch(self, tx: RunTransaction, *, ended: bool) -> None:
        """After ``tx`` committed: send what it queued (its outbox), coalesced."""
        if self.dispatcher is not None and tx.sends:
            sends = tx.sends
            if len(sends) > 1:
                sends = coalesced(self.plan(tx.run), sends)
            for ref, eta in sends:
                self.dispatcher.dispatch(ref, eta)
        if ended:
            self._secrets.pop(tx.run.id, None)  # sealed in the store still, for a retry


def _never() -> bool:
    return False


def _should_retry(plan_step: PlanStep, step: StepRecord, outcome: Outcome) -> bool:
    policy = plan_step.retry
    if step.attempts >= policy.max_attempts:
        return False
    if policy.on_exit_codes is not None and outcome.exit_code not in policy.on_exit_codes:
        return False
    if policy.on_errors is not None:
        return any(re.search(p, outcome.error) for p in policy.on_errors)
    return True
