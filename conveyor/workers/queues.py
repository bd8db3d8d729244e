"""Task names and queue options: the wire contract between dispatchers and workers.

Each step type has a default queue (``StepType.queue``; the built-in names are in
``conveyor.orchestrator.queues``); a pipeline step may name another with ``queue:``,
and a worker consumes the queues given to ``-Q``.
"""

from __future__ import annotations

import re

#: The queue name a pipeline's ``queue:`` key accepts (kept in step with spec.py).
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,49}")


def parse_queues(text: str) -> tuple[str, ...]:
    """Queue names from ``-Q sandbox,control`` (spaces allowed, duplicates dropped)."""
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a queue name (lower-case letters, digits, _ and -)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no queue named")
    return tuple(names)


#: The task that runs one attempt of one step: ``run_step(run_id, step_key, attempt)``,
#: with the keyword ``pipeline`` (the run's pipeline) for monitors only.
RUN_STEP_TASK = "conveyor.run_step"
#: The periodic task that re-dispatches lost work from the database.
RECONCILE_TASK = "conveyor.reconcile"


def step_task_name(step_type: str) -> str:
    """The name monitors (Flower, ``celery events``) show for a step of this type.

    Sent as the message's shadow name: the worker still runs ``RUN_STEP_TASK``, so a
    step type needs no task of its own and every worker runs every type's messages.
    """
    return f"conveyor.{step_type}"
