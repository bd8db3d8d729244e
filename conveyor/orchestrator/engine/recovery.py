"""Putting runs right after things went wrong: retries of whole runs and the reconciler.

The reconciler is what makes the broker a wake-up call rather than the truth: it runs
periodically (Celery beat in the distributed shape) and, from the database alone,
re-dispatches queued steps whose message may have been lost, takes back steps whose
worker stopped heartbeating, advances runs left with nothing queued or running (a
process that died between a change and its advance, a run stored by an older version
before its first steps were queued), fails runs past their timeout, and (every few minutes)
deletes the artifacts of runs past their retention (see ``artifacts/retention.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from conveyor.orchestrator.artifacts.retention import ArtifactRetention
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.engine.workspace import Workspaces
from conveyor.orchestrator.errors import Conflict
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import RunRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import RunTransaction

S = StepStatus
#: Re-runs allowed for steps whose worker was lost, on top of their retry policy.
LOST_WORKER_RERUNS = 2


def retry_run(runtime: Runtime, run_id: str, by: str | None = None) -> RunRecord:
    """Run again the failed and cancelled steps of a finished run, and what depends on them.

    Steps that succeeded (or were skipped) keep their outputs and are not run again.
    """

    def work(tx: RunTransaction) -> None:
        if tx.run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            status = tx.run.status.value
            raise Conflict(f"run {run_id} is {status}: only failed or cancelled runs are retried")
        again = [s for s in tx.steps() if s.status in (S.FAILED, S.CANCELLED)]
        for step in again:
            tx.reset(step, "run retried")
        plan = runtime.plan(tx.run)
        deadline = tx.now + timedelta(seconds=plan.timeout) if plan.timeout else None
        tx.move_run(RunStatus.RUNNING, retried_by=by, steps=[s.key for s in again])
        # Its artifacts (what is left, and what the steps store again) count from its
        # new end: the retention sweep looks at it again then.
        tx.update_run(deadline=deadline, artifacts_expired_at=None)
        runtime.advance_in(tx)

    runtime.write(run_id, work)
    return runtime.store.get_run(run_id)


@dataclass
class Report:
    """What one reconciler pass did."""

    expired_runs: int = 0
    reclaimed: int = 0
    redispatched: int = 0
    #: Runs that had nothing queued or running, advanced again.
    resumed: int = 0
    #: Runs whose artifacts were deleted for their retention.
    expired_artifacts: int = 0
    #: Succeeded runs whose workspace in the artifact store was removed.
    workspaces_removed: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.expired_runs
            or self.reclaimed
            or self.redispatched
            or self.resumed
            or self.expired_artifacts
            or self.workspaces_removed
        )


class Reconciler:
    """Finds, from the database alone, work the broker or a worker dropped."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        stale_after: float = 30.0,
        batch: int = 500,
        retention: ArtifactRetention | None = None,
        workspaces: Workspaces | None = None,
    ) -> None:
        self.runtime = runtime
        self.stale_after = timedelta(seconds=stale_after)
        self.batch = batch
        #: Deletes artifacts past their retention (every few minutes, not every pass).
        self.retention = retention
        #: Removes what succeeded runs left of their workspaces in the artifact store.
        self.workspaces = workspaces

    def run_once(self, now: datetime | None = None) -> Report:
        """One pass over overdue runs, stalled runs, stale queued steps, expired leases and
        old artifacts."""
        now = now or utcnow()
        store, report = self.runtime.store, Report()
        for run_id in store.overdue_runs(now, self.batch):
            report.expired_runs += self.runtime.expire(run_id, now)
        # Stale messages before leases, so a step requeued just now is not sent twice.
        for run_id, key in store.stale_queued(now - self.stale_after, self.batch):
            report.redispatched += self.redispatch(run_id, key, now - self.stale_after)
        for run_id, key in store.expired_leases(now, self.batch):
            report.reclaimed += self.reclaim(run_id, key, now)
        # Last: what the passes above queued is not stalled, and is sent once.
        for run_id in store.stalled_runs(now - self.stale_after, self.batch):
            report.resumed += self.resume(run_id)
        if self.retention is not None and self.retention.due(now):
            report.expired_artifacts = self.retention.sweep(now)
        if self.workspaces is not None and self.workspaces.handoff is not None:
            report.workspaces_removed = self.workspaces.sweep(self.batch)
        return report

    def reclaim(self, run_id: str, key: str, now: datetime) -> bool:
        """Take back a running step whose lease expired: its worker is gone."""

        def work(tx: RunTransaction) -> bool:
            step = tx.step(key)
            expired = step.lease_expires_at is not None and step.lease_expires_at < now
            if step.status != S.RUNNING or not expired:
                return False
            reason = f"lost its worker {step.lease_owner or ''}".strip()
            if tx.run.status.terminal:
                tx.cancel(step, reason)
                return True
            allowed = self.runtime.plan(tx.run).step(key).retry.max_attempts + LOST_WORKER_RERUNS
            if step.attempts >= allowed:
                tx.fail(step, reason, event={"error": reason})
                self.runtime.advance_in(tx)
            else:
                tx.requeue(step, reason)
            return True

        return self.runtime.write(run_id, work)

    def resume(self, run_id: str) -> bool:
        """Advance a run going with no step queued, running or blocked; True if that
        changed it (queued its ready steps, or settled it)."""

        def work(tx: RunTransaction) -> bool:
            if tx.run.status != RunStatus.RUNNING:
                return False
            counts = tx.status_counts()
            if counts[S.QUEUED] or counts[S.RUNNING] or counts[S.BLOCKED]:
                return False
            self.runtime.advance_in(tx)
            return bool(tx.sends) or tx.run.status != RunStatus.RUNNING

        return self.runtime.write(run_id, work)

    def redispatch(self, run_id: str, key: str, cutoff: datetime) -> bool:
        """Send again a step queued since before ``cutoff`` (its message may be lost).

        A duplicate is harmless: only one delivery can claim the attempt.
        """

        def work(tx: RunTransaction) -> bool:
            step = tx.step(key)
            stale = step.available_at is None or step.available_at < cutoff
            if step.status != S.QUEUED or not stale or tx.run.status.terminal:
                return False
            tx.redispatch(step)
            return True

        return self.runtime.write(run_id, work)
