"""The named moves of a run's steps: claim, succeed, fail, retry, requeue, cancel, skip.

Each is built on the run transaction's one transition function (``move_step`` /
``move_steps``, which check the move and fence on status and attempt), so the status
guard stays single; what a move sets besides the status (the lease, when the step
started and ended, its error) is written here and nowhere else.

A move that queues a step also puts it in the transaction's ``sends``: the steps to
hand to the dispatcher once the transaction has committed (an outbox). A step claimed
in the same transaction leaves it again, since the claimer runs it without a message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.contracts.steps import StepRef
from conveyor.orchestrator.contracts.store import KEEP, Dispatch, ExitCode, Move
from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.records import RunRecord, StepRecord

S = StepStatus


def leased(now: datetime, owner: str, length: timedelta) -> dict[str, Any]:
    """The fields of a claimed step: started now, owned by ``owner`` for ``length``."""
    return {
        "started_at": now,
        "completed_at": None,
        "lease_owner": owner,
        "lease_expires_at": now + length,
    }


def ended(now: datetime) -> dict[str, Any]:
    """The fields of an attempt that is over: done now, owned by nobody."""
    return {"completed_at": now, "lease_owner": None, "lease_expires_at": None}


#: The fields of a step handed back by a worker that is gone.
UNLEASED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


class Transitions:
    """Named moves of a run's steps, on the primitives of a run transaction.

    A run transaction (``RunTx``, or the in-memory twin's) inherits these and provides
    ``run``, ``now``, ``move_step``, ``move_steps``, ``update_step`` and ``event``.
    Every method takes steps as read under the run's lock in this transaction.
    """

    run: RunRecord
    now: datetime

    def __init__(self) -> None:
        #: Steps queued by this transaction, to dispatch after it commits.
        self.sends: list[Dispatch] = []
        #: Whether losing this transaction in a crash of the database server would only
        #: make steps run again that reach nothing outside their worker (see ``relax``).
        self.relaxed = False

    def relax(self) -> None:
        """Commit without waiting for the database to flush it to disk.

        For a transaction whose only effects are the results of brief steps (and the
        claims of brief steps after them): if the server crashed within a moment of the
        commit, those steps would still be running at their last durable state, and
        would run again once their lease ran out, as after a lost worker; brief steps
        reach nothing outside their worker, so running one twice changes nothing. The
        database is never inconsistent: later commits are flushed after it, in order.
        """
        self.relaxed = True

    if TYPE_CHECKING:  # the primitives: the transaction class that inherits this has them

        def move_step(
            self,
            step: StepRecord,
            new: StepStatus,
            *,
            event: dict[str, Any] | None = None,
            **fields: Any,
        ) -> bool: ...

        def move_steps(self, moves: Sequence[Move], new: StepStatus) -> None: ...

        def update_step(self, step: StepRecord, **fields: Any) -> None: ...

        def event(self, type_: str, step_key: str | None = None, **payload: Any) -> None: ...

    # -- starting -----------------------------------------------------------------------

    def queue(self, steps: Sequence[StepRecord]) -> list[StepRef]:
        """Queue these pending steps for their next attempt, now; their refs, in order."""
        if not steps:
            return []
        moves: list[Move] = [
            (s, {"attempts": s.attempts + 1, "available_at": self.now}, None) for s in steps
        ]
        self.move_steps(moves, S.QUEUED)
        refs = [self._ref(s, s.attempts + 1) for s in steps]
        self.sends += [(ref, None) for ref in refs]
        return refs

    def claim(self, step: StepRecord, owner: str, length: timedelta) -> StepRecord | None:
        """Take a queued step for ``owner``; None when another writer moved it first."""
        fields = leased(self.now, owner, length)
        if not self.move_step(step, S.RUNNING, event={"owner": owner}, **fields):
            return None
        self._unsend(step)
        return replace(step, status=S.RUNNING, started_at=self.now)

    def claim_all(
        self, steps: Sequence[StepRecord], owner: str, length: timedelta
    ) -> list[StepRecord]:
        """Take these queued steps for ``owner`` in one round trip; all or nothing."""
        fields = leased(self.now, owner, length)
        self.move_steps([(s, fields, {"owner": owner}) for s in steps], S.RUNNING)
        for step in steps:
            self._unsend(step)
        return [replace(s, status=S.RUNNING, started_at=self.now) for s in steps]

    def redispatch(self, step: StepRecord) -> StepRef:
        """Send a queued step again (its message may be lost); its status stays."""
        self.update_step(step, available_at=self.now)
        self.event("step.redispatched", step.key, attempt=step.attempts)
        ref = replace(self._ref(step, step.attempts), anywhere=True)
        self.sends.append((ref, None))
        return ref

    # -- ending an attempt --------------------------------------------------------------

    def succeed(self, done: Sequence[tuple[StepRecord, Mapping[str, Any]]]) -> None:
        """Record running steps' successes with their outputs, in one round trip."""
        moves: list[Move] = []
        for step, outputs in done:
            exit_code = outputs.get("exit_code")
            fields = {
                "outputs": dict(outputs),
                "exit_code": exit_code if isinstance(exit_code, int) else None,
                "last_error": None,
                **ended(self.now),
            }
            moves.append((step, fields, {"duration": self._seconds(step)}))
        if moves:
            self.move_steps(moves, S.SUCCEEDED)

    def fail(
        self,
        step: StepRecord,
        error: str,
        *,
        exit_code: ExitCode = KEEP,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Fail a step: an attempt that ended badly, or a step that cannot run."""
        event = {"reason": error} if event is None else event
        self.move_step(step, S.FAILED, event=event, **self._over(error, exit_code))

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
        eta = self.now + timedelta(seconds=delay)
        payload = {**(event or {}), "retry_in": delay, "next_attempt": step.attempts + 1}
        fields = {**self._over(error, exit_code), "attempts": step.attempts + 1}
        self.move_step(step, S.QUEUED, event=payload, available_at=eta, **fields)
        ref = self._ref(step, step.attempts + 1)
        self.sends.append((ref, eta if delay > 0 else None))
        return ref

    def requeue(self, step: StepRecord, reason: str) -> StepRef:
        """Queue again, now, a running step whose worker is gone."""
        attempt = step.attempts + 1
        fields = {**UNLEASED, "last_error": reason, "attempts": attempt, "available_at": self.now}
        self.move_step(step, S.QUEUED, event={"reason": reason}, **fields)
        ref = self._ref(step, attempt)
        self.sends.append((ref, None))
        return ref

    # -- steps that will not run --------------------------------------------------------

    def cancel(
        self,
        step: StepRecord,
        reason: str,
        *,
        exit_code: ExitCode = KEEP,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Cancel a step, whether it waited, was queued or was running."""
        event = {"reason": reason} if event is None else event
        self.move_step(step, S.CANCELLED, event=event, **self._over(reason, exit_code))

    def skip(self, step: StepRecord, reason: str) -> None:
        """Skip a pending step whose condition says so."""
        self.move_step(step, S.SKIPPED, event={"reason": reason}, **self._over(reason, KEEP))

    def reset(self, step: StepRecord, reason: str) -> None:
        """Make an ended step pending again, for a retried run."""
        fields = {"last_error": None, "completed_at": None}
        self.move_step(step, S.PENDING, event={"reason": reason}, **fields)

    # -- helpers ------------------------------------------------------------------------

    def _over(self, error: str, exit_code: ExitCode) -> dict[str, Any]:
        """The fields of a step that ended (or whose attempt did) with ``error``."""
        fields = {"last_error": error, **ended(self.now)}
        if exit_code is not KEEP:
            fields["exit_code"] = exit_code
        return fields

    def _ref(self, step: StepRecord, attempt: int) -> StepRef:
        return StepRef(self.run.id, step.key, attempt, step.queue)

    def _unsend(self, step: StepRecord) -> None:
        self.sends = [d for d in self.sends if d[0].step_key != step.key]

    def _seconds(self, step: StepRecord) -> float | None:
        if step.started_at is None:
            return None
        return round((self.now - step.started_at).total_seconds(), 3)
