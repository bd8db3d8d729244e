"""The Celery app, built from the settings: ``make_celery(settings)``.

No autodiscovery and no ``current_app``: the app is made here, its two tasks are
registered by ``tasks.register`` and its routes are written out. Every option below
serves one promise: a step's message may be lost, duplicated or delivered late, and
Postgres still decides what runs.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.queues import CONTROL, SANDBOX, STANDARD
from conveyor.orchestrator.settings import Settings

from . import tasks
from .hosts import serve_host_queues
from .queues import RECONCILE_TASK, RUN_STEP_TASK
from .shutdown import watch_shutdown


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` with Conveyor's queues and tasks."""
    if not settings.broker_url:
        raise ConveyorError(
            "no broker: set CONVEYOR_BROKER_URL (redis://host:6379/0 or amqp://host//)"
        )
    app = Celery("conveyor", broker=settings.broker_url, set_as_current=False, fixups=[])
    app.conf.update(celery_config(settings))
    tasks.register(app, settings)
    watch_shutdown()  # a worker's pool processes learn of its warm shutdown
    serve_host_queues(app, settings)  # and its host's own queues (workspaces there)
    return app


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for Conveyor (a function, so a test can read it)."""
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "enable_utc": True,
        "timezone": "UTC",
        # Results live in Postgres; Celery's result backend would be a second truth.
        "task_ignore_result": True,
        "result_backend": None,
        # Acknowledge after the step, and take one message at a time: a worker that dies
        # leaves its message to the broker, and a busy worker does not hoard messages
        # another could run. A duplicate delivery is harmless (the claim is idempotent).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A step that failed is a failed task (for monitors) whose outcome is recorded
        # already: acknowledged like any other, never redelivered.
        "task_acks_on_failure_or_timeout": True,
        # Task events for monitors (Flower): workers' own, and one task per step run.
        "worker_send_task_events": settings.task_events,
        "worker_prefetch_multiplier": 1,
        # A broker blip must not kill a running step: its message may come again, and
        # that delivery finds nothing to claim.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "task_queues": {name: {"exchange": name, "routing_key": name} for name in STANDARD},
        "task_default_queue": CONTROL,
        "task_create_missing_queues": True,  # a pipeline step may name a queue of its own
        # run_step is always sent to its step's queue (CeleryDispatcher passes it); the
        # route below is only what a bare `send_task` without a queue would use.
        "task_routes": {
            RUN_STEP_TASK: {"queue": SANDBOX},
            RECONCILE_TASK: {"queue": CONTROL},
        },
        "beat_schedule": {
            "conveyor-reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_seconds,
                # A pass nobody ran in time is useless: the next one does the same work.
                "options": {"queue": CONTROL, "expires": max(settings.reconcile_seconds, 1.0)},
            }
        },
        # One interval task needs no schedule file: nothing to write in a read-only
        # container, nothing to lose between restarts.
        "beat_scheduler": "celery.beat:Scheduler",
    }
