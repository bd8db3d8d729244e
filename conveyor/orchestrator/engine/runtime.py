"""The run state machine: what is ready, claims, results, retries, cancellation.

Every method is one short transaction on one run (see ``store.transaction``); steps
that become ready are dispatched only after that transaction commits, so a worker
never sees a step the database does not. The dispatcher is only a wake-up call: a
message that arrives twice, late, or for an attempt that is over finds nothing to
claim and does nothing.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import Dispatcher, StepRef
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.engine.advance import Advance
from conveyor.orchestrator.engine.claims import (
    BRIEF_BATCH,
    Claim,
    Dispatch,
    claim_all,
    claim_in,
    coalesced,
    queued_brief,
    with_brief_siblings,
)
from conveyor.orchestrator.engine.vault import Vault
from conveyor.orchestrator.errors import Conflict, NotFound, NothingToClaim, SecretsUnavailable
from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import RunRecord, StepRecord
from conveyor.orchestrator.store.sql import NewRun, SqlStore, StepSeed
from conveyor.orchestrator.store.transaction import Move, RunTx

S = StepStatus


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the executor reports it."""

    error: str
    exit_code: int | None = None
    kind: str = "error"  # error | timeout | cancelled


@dataclass(frozen=True)
class Finished:
    """An attempt that ended, to record: its outputs when it succeeded, else its outcome."""

    ref: StepRef
    outputs: Mapping[str, Any] | None = None
    outcome: Outcome | None = None
    logs: Sequence[tuple[str, str]] = ()


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
        store: SqlStore,
        templates: TemplateEngine,
        dispatcher: Dispatcher | None = None,
        *,
        lease_seconds: float = 30.0,
        vault: Vault | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.templates = templates
        self.dispatcher = dispatcher
        self.lease = timedelta(seconds=lease_seconds)
        #: Opened secrets of runs this process has seen (sealed in the store).
        self._secrets: dict[str, dict[str, str]] = {}
        self.on_finished: list[Callable[[RunRecord], None]] = []
        self.on_cancel: list[Callable[[str], None]] = []
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
            with self._lock:
                self._plans[run_id] = plan
                while len(self._plans) > 512:
                    self._plans.popitem(last=False)
        return plan

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
    ) -> RunRecord:
        """Create a run of ``plan`` and dispatch its first steps.

        ``definition_id`` names the registered version ``source`` is (running an older
        version must not make it the newest again).
        """
        deadline = utcnow() + timedelta(seconds=plan.timeout) if plan.timeout else None
        sealed = self._seal(secrets) if secrets else None
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
            )
        )
        if secrets:
            self._secrets[run.id] = dict(secrets)
        self.advance(run.id)
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

    def claim(self, ref: StepRef, owner: str) -> Claim | None:
        """Take ``ref`` for this owner, or None if it is not (or no longer) queued."""
        claimed: list[Claim] = []

        def work(tx: RunTx) -> list[Dispatch]:
            claim = claim_in(tx, ref, owner, self.lease)
            if claim is not None:
                claimed.append(with_brief_siblings(tx, self.plan(tx.run), claim, owner, self.lease))
            return []

        try:
            self.write(ref.run_id, work, ref.step_key, claim_attempt=ref.attempt)
        except NothingToClaim:  # a duplicate or stale delivery: nothing was locked
            return self._claim_brief(ref, owner)
        return claimed[0] if claimed else None

    def _claim_brief(self, ref: StepRef, owner: str) -> Claim | None:
        """For a stale message of a brief step: the run's queued brief steps on its queue.

        Such a message stands for up to ``BRIEF_BATCH`` brief steps (``claims.coalesced``),
        and another worker's batch may have taken the one it names: it takes the
        others, so none is left without a message.
        """
        try:
            plan = self.plan_of(ref.run_id)
        except NotFound:
            return None
        named = plan.by_key.get(ref.step_key)
        if named is None or not named.brief:
            return None
        claimed: list[Claim] = []

        def work(tx: RunTx) -> list[Dispatch]:
            found = queued_brief(tx, plan, ref.queue, BRIEF_BATCH)
            taken = claim_all(tx, found, owner, self.lease)
            if taken:
                claimed.append(taken[0]._replace(batch=tuple(taken[1:])))
            return []

        try:
            self.write(ref.run_id, work)
        except NotFound:
            return None
        return claimed[0] if claimed else None

    def succeed(
        self,
        ref: StepRef,
        outputs: Mapping[str, Any],
        logs: Sequence[tuple[str, str]] = (),
        *,
        continue_as: str | None = None,
        queues: Collection[str] | None = None,
    ) -> Claim | None:
        """Record a successful attempt (and its last log lines) and move the run on.

        With ``continue_as``, one step this made ready (on one of ``queues``, or any when
        None) is claimed for that owner in the same transaction and returned: the caller
        runs it next, sparing a dispatch, a thread hop and a transaction per step of a
        chain. The others are dispatched as usual.
        """
        return self.record(
            [Finished(ref, outputs=outputs, logs=logs)], continue_as=continue_as, queues=queues
        )

    def fail(self, ref: StepRef, outcome: Outcome, logs: Sequence[tuple[str, str]] = ()) -> None:
        """Record a failed attempt: retry it, fail it, or mark it cancelled."""
        self.record([Finished(ref, outcome=outcome, logs=logs)])

    def record(
        self,
        finished: Sequence[Finished],
        *,
        continue_as: str | None = None,
        queues: Collection[str] | None = None,
    ) -> Claim | None:
        """Record attempts of one run's steps, in order, in one transaction.

        Each as ``succeed`` or ``fail`` would; ``continue_as`` as for ``succeed``, after
        the last of them.
        """
        if not finished:
            return None
        run_id = finished[0].ref.run_id
        claimed: list[Claim] = []

        def work(tx: RunTx) -> list[Dispatch]:
            tx.append_logs([(f.ref.step_key, f.ref.attempt, f.logs) for f in finished])
            if len(finished) > 1:  # the first was read with the lock
                tx.read_ahead([f.ref.step_key for f in finished[1:]])
            dispatches: list[Dispatch] = []
            succeeded: list[str] = []
            moves: list[Move] = []
            for one in finished:
                if one.outcome is None:
                    move = self._success(tx, one.ref, one.outputs or {})
                    if move is not None:
                        moves.append(move)
                        succeeded.append(one.ref.step_key)
                else:  # successes before a failure are written first, as they happened
                    tx.move_steps(moves, S.SUCCEEDED)
                    moves = []
                    dispatches += self._record_failure(tx, one.ref, one.outcome)
            tx.move_steps(moves, S.SUCCEEDED)
            if succeeded:  # what they made ready, once for all of them
                dispatches += self.advance_in(tx, succeeded)
            if continue_as is None:
                return dispatches
            for next_ref, eta in dispatches:
                if eta is None and (queues is None or next_ref.queue in queues):
                    claim = claim_in(tx, next_ref, continue_as, self.lease)
                    if claim is not None:
                        plan = self.plan(tx.run)
                        claim = with_brief_siblings(
                            tx, plan, claim, continue_as, self.lease, dispatches
                        )
                        claimed.append(claim)
                        taken = {c.ref for c in (claim, *claim.batch)}
                        return [d for d in dispatches if d[0] not in taken]
            return dispatches

        self.write(run_id, work, finished[0].ref.step_key)
        return claimed[0] if claimed else None

    def _success(self, tx: RunTx, ref: StepRef, outputs: Mapping[str, Any]) -> Move | None:
        """The move that records the attempt's success; None when it lost its step."""
        step = self._running(tx, ref)
        if step is None:
            return None
        exit_code = outputs.get("exit_code")
        fields = {
            "outputs": dict(outputs),
            "exit_code": exit_code if isinstance(exit_code, int) else None,
            "last_error": None,
            **_done(tx.now),
        }
        return step, fields, {"duration": _seconds(step, tx.now)}

    def _record_failure(self, tx: RunTx, ref: StepRef, outcome: Outcome) -> list[Dispatch]:
        step = self._running(tx, ref)
        if step is None:
            return []
        plan_step = self.plan(tx.run).step(step.key)
        fields = {"last_error": outcome.error, "exit_code": outcome.exit_code, **_done(tx.now)}
        event = {"error": outcome.error, "exit_code": outcome.exit_code, "kind": outcome.kind}
        if outcome.kind == "cancelled" or tx.run.status.terminal:
            tx.move_step(step, S.CANCELLED, event=event, **fields)
            return []
        if _should_retry(plan_step, step, outcome):
            return self._retry(tx, plan_step, step, event, fields)
        tx.move_step(step, S.FAILED, event=event, **fields)
        return self.advance_in(tx)

    def _retry(
        self,
        tx: RunTx,
        plan_step: PlanStep,
        step: StepRecord,
        event: dict[str, Any],
        fields: dict[str, Any],
    ) -> list[Dispatch]:
        delay = plan_step.retry.delay(step.attempts)
        eta = tx.now + timedelta(seconds=delay)
        event = {**event, "retry_in": delay, "next_attempt": step.attempts + 1}
        tx.move_step(
            step, S.QUEUED, event=event, attempts=step.attempts + 1, available_at=eta, **fields
        )
        ref = StepRef(tx.run.id, step.key, step.attempts + 1, step.queue)
        return [(ref, eta if delay > 0 else None)]

    def _running(self, tx: RunTx, ref: StepRef) -> StepRecord | None:
        """The step if ``ref`` still owns it (attempt fencing), else None."""
        step = tx.step(ref.step_key)
        if step.status != S.RUNNING or step.attempts != ref.attempt:
            return None
        return step

    # -- stopping ----------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel a run: steps not started are cancelled, running ones are told to stop."""

        def work(tx: RunTx) -> list[Dispatch]:
            if tx.run.status.terminal:
                raise Conflict(f"run {run_id} is already {tx.run.status.value}")
            self._stop_steps(tx, reason)
            tx.move_run(RunStatus.CANCELLED, error=reason)
            return []

        self.write(run_id, work)
        for callback in self.on_cancel:
            callback(run_id)

    def expire(self, run_id: str, now: datetime | None = None) -> bool:
        """Fail a run whose timeout has passed (by ``now``); True if it did."""
        expired: list[bool] = []

        def work(tx: RunTx) -> list[Dispatch]:
            run = tx.run
            if run.status.terminal or not run.deadline or run.deadline > (now or tx.now):
                return []
            plan = self.plan(run)
            reason = f"run timed out after {format_duration(plan.timeout)}"
            self._stop_steps(tx, reason)
            tx.move_run(RunStatus.FAILED, error=reason)
            expired.append(True)
            return []

        self.write(run_id, work)
        if expired:
            for callback in self.on_cancel:
                callback(run_id)
        return bool(expired)

    def _stop_steps(self, tx: RunTx, reason: str) -> None:
        for step in tx.steps():
            if step.status in (S.PENDING, S.QUEUED, S.BLOCKED):
                tx.move_step(step, S.CANCELLED, event={"reason": reason}, last_error=reason)

    # -- advancing ---------------------------------------------------------------------

    def advance_in(self, tx: RunTx, changed: str | Sequence[str] | None = None) -> list[Dispatch]:
        """Start what is ready, cancel what cannot run, settle the run (see ``Advance``)."""
        return self._advance(tx, changed)

    # -- plumbing ----------------------------------------------------------------------

    def write(
        self,
        run_id: str,
        work: Callable[[RunTx], list[Dispatch]],
        step_key: str | None = None,
        claim_attempt: int | None = None,
    ) -> None:
        """Run ``work`` in a transaction on the run; dispatch what it returns after commit.

        ``step_key``: the step ``work`` reads first, read with the run's lock; with
        ``claim_attempt``, only while it is queued at that attempt (NothingToClaim).
        """
        with self.store.transaction(run_id, step_key, claim_attempt) as tx:
            was_terminal = tx.run.status.terminal
            dispatches = work(tx)
            finished = tx.run if tx.run.status.terminal and not was_terminal else None
        if self.dispatcher is not None:
            if len(dispatches) > 1:
                dispatches = coalesced(self.plan(tx.run), dispatches)
            for ref, eta in dispatches:
                self.dispatcher.dispatch(ref, eta)
        if finished is not None:
            self._secrets.pop(run_id, None)  # sealed in the store still, for a retry
            for callback in self.on_finished:
                callback(finished)


def _should_retry(plan_step: PlanStep, step: StepRecord, outcome: Outcome) -> bool:
    policy = plan_step.retry
    if step.attempts >= policy.max_attempts:
        return False
    if policy.on_exit_codes is not None and outcome.exit_code not in policy.on_exit_codes:
        return False
    if policy.on_errors is not None:
        return any(re.search(p, outcome.error) for p in policy.on_errors)
    return True


def _done(now: datetime) -> dict[str, Any]:
    return {"completed_at": now, "lease_owner": None, "lease_expires_at": None}


def _seconds(step: StepRecord, now: datetime) -> float | None:
    return round((now - step.started_at).total_seconds(), 3) if step.started_at else None
