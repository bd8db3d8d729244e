"""Claims: a worker taking queued steps of a run, alone or with the run's brief steps.

Everything here runs inside a ``RunTransaction`` (the run's row locked); ``Runtime`` opens the
transactions. Brief steps (``PlanStep.brief``: in-process, milliseconds, nothing
outside the worker) are coalesced: those of a run that become ready together on one
queue get one message per ``BRIEF_BATCH`` of them (``coalesced``), and the worker that
claims the step a message names takes the run's other queued brief steps on that queue
with it (``with_brief_siblings``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

from conveyor.orchestrator.contracts import Dispatch, RunTransaction, StepRef
from conveyor.orchestrator.pipeline.plan import ExecutionPlan
from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.records import RunRecord, StepRecord

S = StepStatus

#: Brief steps of one run taken at once by one worker, at most.
BRIEF_BATCH = 16


class Claim(NamedTuple):
    """A step attempt taken by a worker: the run, the step as claimed, its ref.

    ``batch``: brief steps of the same run claimed with it, to run after it.
    """

    run: RunRecord
    step: StepRecord
    ref: StepRef
    batch: tuple[Claim, ...] = ()


def claimable(tx: RunTransaction, step: StepRecord) -> bool:
    """The step is queued and due, in a run still going.

    Not due yet is an early delivery: the message with the right eta comes later.
    """
    due = not (step.available_at and step.available_at > tx.now)
    return step.status == S.QUEUED and due and not tx.run.status.terminal


def claim_in(tx: RunTransaction, ref: StepRef, owner: str, length: timedelta) -> Claim | None:
    """Take ``ref`` if its step is queued at that attempt and due; else None."""
    step = tx.step(ref.step_key)
    if step.attempts != ref.attempt or not claimable(tx, step):
        return None
    running = tx.claim(step, owner, length)
    return Claim(tx.run, running, ref) if running is not None else None


def claim_all(
    tx: RunTransaction, found: Sequence[StepRecord], owner: str, length: timedelta
) -> list[Claim]:
    """Claim these steps, read under the run's lock, in one round trip (see claim_in)."""
    due = [s for s in found if claimable(tx, s)]
    return [
        Claim(tx.run, s, StepRef(tx.run.id, s.key, s.attempts, s.queue))
        for s in tx.claim_all(due, owner, length)
    ]


def queued_brief(
    tx: RunTransaction, plan: ExecutionPlan, queue: str, limit: int
) -> list[StepRecord]:
    """Up to ``limit`` of the run's brief steps queued and due on ``queue``."""
    found = tx.queued_now(queue, plan.brief_types, limit)
    return [s for s in found if plan.step(s.key).brief]


def brief_batch(
    tx: RunTransaction, plan: ExecutionPlan, ref: StepRef, owner: str, length: timedelta
) -> Claim | None:
    """For a message of a brief step that another claimer took: the run's queued brief
    steps on its queue (up to ``BRIEF_BATCH``), claimed for ``owner``; None if none.

    Such a message stands for up to ``BRIEF_BATCH`` brief steps (``coalesced``): the
    batch that took the step it names may have left others that count on it, so it
    takes them, and none is left without a message.
    """
    named = plan.by_key.get(ref.step_key)
    if named is None or not named.brief:
        return None
    taken = claim_all(tx, queued_brief(tx, plan, ref.queue, BRIEF_BATCH), owner, length)
    return taken[0]._replace(batch=tuple(taken[1:])) if taken else None


def with_brief_siblings(
    tx: RunTransaction,
    plan: ExecutionPlan,
    claim: Claim,
    owner: str,
    length: timedelta,
    among: Sequence[Dispatch] | None = None,
) -> Claim:
    """``claim``, and when its step is brief, the run's queued brief steps on its queue.

    ``among``: only those of these dispatches (the steps a result just made ready);
    brief steps queued before have messages of their own, or ride one.
    """
    if not plan.step(claim.ref.step_key).brief:
        return claim
    queue = claim.ref.queue
    if among is None:
        found = queued_brief(tx, plan, queue, BRIEF_BATCH - 1)
    else:
        keys = [
            r.step_key
            for r, eta in among
            if eta is None and r != claim.ref and r.queue == queue and plan.step(r.step_key).brief
        ][: BRIEF_BATCH - 1]
        if not keys:
            return claim
        tx.read_ahead(keys)
        found = [tx.step(k) for k in keys]
    return claim._replace(batch=tuple(claim_all(tx, found, owner, length)))


def coalesced(plan: ExecutionPlan, dispatches: list[Dispatch]) -> list[Dispatch]:
    """One message per ``BRIEF_BATCH`` brief steps due now on a queue.

    The worker that claims the step a message names takes the others with it.
    """
    seen: Counter[str] = Counter()
    kept: list[Dispatch] = []
    for ref, eta in dispatches:
        if eta is None and plan.step(ref.step_key).brief:
            seen[ref.queue] += 1
            if (seen[ref.queue] - 1) % BRIEF_BATCH:
                continue
        kept.append((ref, eta))
    return kept
