"""What monitors see of a ``run_step`` message: one Celery task per step it ran.

One message may run more than the step it names: a worker that claims a brief step
takes up to 15 more with it, and a step that succeeds may go on with the next one of
its chain (see ``engine/claims.py`` and ``Runtime.record``). Celery knows only the
message, so :class:`TaskWatch` tells monitors (Flower, ``celery events``) about the
others itself: each gets task events of its own (``task-received``, ``-started``, then
``-succeeded`` or ``-failed``), with a task id of its own, the message's task as its
parent, and the same name and arguments a message of its own would carry. Events go
out together, one broker message at a time: a step that is not brief shows as started
when it starts; the ends of steps go out at most ``FLUSH_INTERVAL`` later, with the
next start or when the delivery is over (a chain of brief steps would otherwise cost
a broker round trip per step).

The message's own step is the task itself: :meth:`TaskWatch.verdict` returns a short
result when it succeeded and raises an :class:`AttemptUnsuccessful` (one of the task's
``throws``: an expected failure, logged without a traceback) when it did not. The
engine has recorded the outcome by then; the exception only tells the monitor, and
never makes Celery retry or deliver the message again.

Watching never changes what runs: every failure to send an event is logged and
dropped.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine import Attempt, Finished

from .queues import step_task_name

log = logging.getLogger("conveyor.workers.watch")

#: Events of steps that ended wait this long at most for a broker message of their own
#: (or go out sooner with the next one). A chain of brief steps ends one step every few
#: milliseconds, and a message per step would cost a broker round trip per step.
FLUSH_INTERVAL = 0.25


class AttemptUnsuccessful(Exception):
    """The step's attempt did not succeed; the engine has recorded how it ended."""


class AttemptFailed(AttemptUnsuccessful):
    """The step's attempt failed."""


class AttemptTimedOut(AttemptUnsuccessful):
    """The step's attempt ran out of time."""


class AttemptCancelled(AttemptUnsuccessful):
    """The step's attempt was cancelled (its run was cancelled or is over)."""


_BY_KIND: dict[str, type[AttemptUnsuccessful]] = {
    "error": AttemptFailed,
    "timeout": AttemptTimedOut,
    "cancelled": AttemptCancelled,
}


def unsuccessful(ref: StepRef, pipeline: str | None, finished: Finished) -> AttemptUnsuccessful:
    """The exception a monitor shows for an attempt that did not succeed."""
    outcome = finished.outcome
    assert outcome is not None
    where = f"step {ref.step_key} of run {ref.run_id}"
    if pipeline:
        where += f" (pipeline {pipeline})"
    return _BY_KIND.get(outcome.kind, AttemptFailed)(
        f"{where}, attempt {ref.attempt}: {outcome.error}"
    )


@dataclass
class _Shown:
    """A step run under another step's message: its own task id for monitors."""

    task_id: str
    pipeline: str
    started: float
    ended: float | None = None


@dataclass
class TaskWatch:
    """Watches one ``run_step`` delivery (see the module); an executor ``Watch``.

    ``ref``: the step the message names. ``task_id``, ``root_id``, ``hostname``: the
    message's task, as Celery has them. ``enabled``: whether to send events at all
    (``CONVEYOR_TASK_EVENTS``).
    """

    app: Celery
    ref: StepRef
    task_id: str | None
    root_id: str | None
    hostname: str | None
    enabled: bool
    own: Finished | None = None
    pipeline: str | None = None
    others: int = 0
    _shown: dict[StepRef, _Shown] = field(default_factory=dict)
    _pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _flushed: float = field(default_factory=time.monotonic)

    # -- the executor's Watch ------------------------------------------------------------

    def started(self, attempt: Attempt) -> None:
        """An attempt starts: a task of its own unless it is the message's step."""
        now = time.time()
        self._end_running(now)
        ref = attempt.ref
        if ref == self.ref:
            self.pipeline = attempt.run.pipeline
            return
        self.others += 1
        shown = _Shown(uuid.uuid4().hex, attempt.run.pipeline, now)
        self._shown[ref] = shown
        args = (ref.run_id, ref.step_key, ref.attempt)
        self._event(
            "task-received",
            now,
            uuid=shown.task_id,
            name=step_task_name(attempt.plan_step.type),
            args=saferepr(args),
            kwargs=saferepr({"pipeline": shown.pipeline}),
            root_id=self.root_id or self.task_id,
            parent_id=self.task_id,
            retries=0,
            eta=None,
            expires=None,
            exchange=ref.queue,
            routing_key=ref.queue,
        )
        self._event("task-started", now, uuid=shown.task_id)  # the pid: the sender's
        if not attempt.plan_step.brief:
            self.flush()  # a step that takes a while shows as running while it runs

    def recorded(self, done: Sequence[Finished]) -> None:
        """Attempts' results are stored: their tasks end, succeeded or failed."""
        now = time.time()
        self._end_running(now)
        for finished in done:
            if finished.ref == self.ref:
                self.own = finished
                continue
            shown = self._shown.pop(finished.ref, None)
            if shown is None:
                continue
            runtime = max(0.0, (shown.ended or now) - shown.started)
            if finished.outcome is None:
                self._event(
                    "task-succeeded", now, uuid=shown.task_id, result="'succeeded'", runtime=runtime
                )
            else:
                error = unsuccessful(finished.ref, shown.pipeline, finished)
                self._failed(shown.task_id, error, now, runtime)
        if time.monotonic() - self._flushed >= FLUSH_INTERVAL:
            self.flush()  # else with the next step's, or when the delivery ends (close)

    # -- the message's own task ----------------------------------------------------------

    def close(self, error: BaseException | None = None) -> None:
        """The delivery is over: tasks started but never recorded end as failed."""
        now = time.time()
        for shown in self._shown.values():
            reason = error or RuntimeError("the result was not recorded")
            self._failed(shown.task_id, reason, now, max(0.0, now - shown.started))
        self._shown.clear()
        self.flush()

    def verdict(self) -> str:
        """The task's result: how its own step ended (AttemptUnsuccessful when not well)."""
        more = f"; {self.others} more step(s) ran with it" if self.others else ""
        if self.own is None:
            return f"nothing to run: the step was taken already or is over{more}"
        if self.own.outcome is not None:
            raise unsuccessful(self.ref, self.pipeline, self.own)
        return f"succeeded{more}"

    # -- events --------------------------------------------------------------------------

    def _end_running(self, now: float) -> None:
        for shown in self._shown.values():
            if shown.ended is None:
                shown.ended = now

    def _failed(self, task_id: str, error: BaseException, now: float, runtime: float) -> None:
        self._event(
            "task-failed",
            now,
            uuid=task_id,
            exception=saferepr(error),
            traceback="".join(traceback.format_exception_only(error)),
            runtime=runtime,
        )

    def _event(self, type_: str, timestamp: float, **fields: Any) -> None:
        if self.enabled:
            self._pending.append((type_, {"timestamp": timestamp, **fields}))

    def flush(self) -> None:
        """Send the events gathered so far, in one broker message."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._flushed = time.monotonic()
        try:
            with (
                self.app.amqp.producer_pool.acquire(block=True) as producer,
                self.app.events.Dispatcher(
                    producer.connection,
                    hostname=self.hostname,
                    channel=producer.channel,
                    buffer_while_offline=False,
                    buffer_group=["task"],
                    buffer_limit=len(pending) + 1,
                ) as dispatcher,
            ):
                for type_, fields in pending:
                    dispatcher.send(type_, **fields)
                dispatcher.flush()
        except Exception as exc:  # a monitor's view is never worth a step
            log.warning("could not send %d task event(s) to monitors: %s", len(pending), exc)
