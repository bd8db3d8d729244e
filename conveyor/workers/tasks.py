"""The two tasks: ``run_step`` and ``reconcile``. Thin: ids in, orchestrator calls out.

Both run on the process's :class:`~conveyor.workers.process.WorkerProcess`, built on
the first task a pool process runs, never in the parent before it forks.

``run_step`` ends as its step did: a step that failed, timed out or was cancelled is a
failed task (an expected one: ``throws``), and every other step the message ran shows
as a task of its own (``watch.TaskWatch``). Either way the engine has recorded the
outcome first, and the message is acknowledged: Celery never retries it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.settings import Settings

from .hosts import HOST_INFIX
from .process import PerProcess, WorkerProcess, consumed_queues, patiently
from .queues import RECONCILE_TASK, RUN_STEP_TASK
from .watch import AttemptUnsuccessful, TaskWatch

log = logging.getLogger("conveyor.workers")


def register(app: Celery, settings: Settings) -> None:
    """Define Conveyor's tasks on ``app``."""
    workers = PerProcess(
        lambda owner: WorkerProcess.build(app, settings, owner, consumed_queues(app))
    )

    def worker(task: Any) -> WorkerProcess:
        node = task.request.hostname or "worker"
        return patiently(lambda: workers.get(node))

    def run_step(task: Any, run_id: str, step_key: str, attempt: int, **_labels: Any) -> str:
        """Run one attempt of one step; a duplicate or stale message does nothing.

        Keyword arguments (``pipeline``) are labels for monitors, never read here.
        """
        process = worker(task)
        queue = _queue(task) or _queue_of(process, run_id, step_key)
        if queue is None:
            log.warning("run %s has no step %s: message dropped", run_id, step_key)
            return "dropped: the run has no such step"
        ref = StepRef(run_id, step_key, int(attempt), queue)
        request = task.request
        watch = TaskWatch(
            app, ref, request.id, request.root_id, request.hostname, settings.task_events
        )
        error: BaseException | None = None
        try:
            process.run_step(ref, watch)
        except BaseException as exc:
            error = exc
            raise
        finally:
            watch.close(error)
        return watch.verdict()

    def reconcile(task: Any) -> None:
        """Re-dispatch lost messages, reclaim expired leases, expire overdue runs."""
        worker(task).reconcile()

    # shared=False: the tasks belong to this app alone, bound to its settings; another
    # app made in the same process (tests, the bench) gets its own.
    # throws: a step that did not succeed is a failed task, logged without a traceback.
    app.task(
        name=RUN_STEP_TASK,
        bind=True,
        ignore_result=True,
        shared=False,
        throws=(AttemptUnsuccessful,),
    )(run_step)
    app.task(name=RECONCILE_TASK, bind=True, ignore_result=True, shared=False)(reconcile)


def _queue(task: Any) -> str | None:
    """The queue the message came from (its routing key: queues are named for them);
    for a host's own queue (``sandbox.host.<id>``), the queue it stands for."""
    info = task.request.delivery_info or {}
    key = info.get("routing_key")
    return key.split(HOST_INFIX, 1)[0] if isinstance(key, str) and key else None


def _queue_of(process: WorkerProcess, run_id: str, step_key: str) -> str | None:
    """The step's queue as the database has it, when the delivery did not say."""
    try:
        steps = patiently(lambda: process.store.list_steps(run_id))
    except NotFound:
        return None
    return next((s.queue for s in steps if s.key == step_key), None)
