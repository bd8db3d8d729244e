"""The two tasks: ``run_step`` and ``reconcile``. Thin: ids in, orchestrator calls out.

Both run on the process's :class:`~conveyor.workers.process.WorkerProcess`, built on
the first task a pool process runs, never in the parent before it forks.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.settings import Settings

from .process import PerProcess, WorkerProcess, consumed_queues, patiently
from .queues import RECONCILE_TASK, RUN_STEP_TASK

log = logging.getLogger("conveyor.workers")


def register(app: Celery, settings: Settings) -> None:
    """Define Conveyor's tasks on ``app``."""
    workers = PerProcess(
        lambda owner: WorkerProcess.build(app, settings, owner, consumed_queues(app))
    )

    def worker(task: Any) -> WorkerProcess:
        node = task.request.hostname or "worker"
        return patiently(lambda: workers.get(node))

    def run_step(task: Any, run_id: str, step_key: str, attempt: int) -> None:
        """Run one attempt of one step; a duplicate or stale message does nothing."""
        process = worker(task)
        queue = _queue(task) or _queue_of(process, run_id, step_key)
        if queue is None:
            log.warning("run %s has no step %s: message dropped", run_id, step_key)
            return
        process.run_step(StepRef(run_id, step_key, int(attempt), queue))

    def reconcile(task: Any) -> None:
        """Re-dispatch lost messages, reclaim expired leases, expire overdue runs."""
        worker(task).reconcile()

    # shared=False: the tasks belong to this app alone, bound to its settings; another
    # app made in the same process (tests, the bench) gets its own.
    app.task(name=RUN_STEP_TASK, bind=True, ignore_result=True, shared=False)(run_step)
    app.task(name=RECONCILE_TASK, bind=True, ignore_result=True, shared=False)(reconcile)


def _queue(task: Any) -> str | None:
    """The queue the message came from (its routing key: queues are named for them)."""
    info = task.request.delivery_info or {}
    key = info.get("routing_key")
    return key if isinstance(key, str) and key else None


def _queue_of(process: WorkerProcess, run_id: str, step_key: str) -> str | None:
    """The step's queue as the database has it, when the delivery did not say."""
    try:
        steps = patiently(lambda: process.store.list_steps(run_id))
    except NotFound:
        return None
    return next((s.queue for s in steps if s.key == step_key), None)
