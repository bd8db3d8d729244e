"""The Celery dispatcher: ``run_step(run_id, step_key, attempt)`` to the step's queue.

Messages carry ids only. Sending is a wake-up call, never the truth: the step is
already ``queued`` in the database when it is sent, so a message that cannot be sent
(the broker is away) is logged and left to the reconciler, which sends it again.

A step that must wait (a retry's backoff) is not sent with a Celery ``eta``. With
``acks_late`` a worker takes an eta message at once and holds it unacknowledged in
memory until it is due: the broker cannot give it to another worker, a worker that
dies strands it until the visibility timeout (an hour on Redis), and a wait longer
than that timeout is delivered twice. Instead the step waits in the database
(``available_at``) and a timer thread in the process that scheduled it sends the
message when it is due; if that process goes away first, the reconciler finds the
step once it is due and overdue and sends it. Either way no worker slot is held
while the step waits.

What monitors show: the message's shadow name is the step's type
(``conveyor.step.shell_exec``, ``queues.step_task_name``) and its keyword
``pipeline`` names the run's pipeline, read from the plan the process already holds
(``plans``); the arguments stay the ids. So Flower lists each step by type, pipeline,
run and step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine import DueTimer
from conveyor.orchestrator.errors import BrokerUnavailable

from .queues import RUN_STEP_TASK, step_task_name

if TYPE_CHECKING:
    from conveyor.orchestrator.pipeline import ExecutionPlan

    from .hosts import HostRouter

#: A run's plan by run id (``Runtime.plan_of``: cached in the process).
Plans = Callable[[str], "ExecutionPlan"]

log = logging.getLogger("conveyor.workers.dispatch")

#: Sent this long after a step is due, so a worker whose clock runs a little behind
#: does not find it early (and drop the message as an early delivery).
DUE_MARGIN = timedelta(milliseconds=200)


class CeleryDispatcher:
    """The orchestrator's Dispatcher over Celery: one ``run_step`` message per step."""

    def __init__(
        self, app: Celery, plans: Plans | None = None, router: HostRouter | None = None
    ) -> None:
        self.app = app
        #: Where the labels monitors show come from; set once the runtime exists.
        self.plans = plans
        #: Sends a step to the host that holds its run's workspace (``hosts.py``).
        self.router = router
        self._timer = DueTimer("conveyor-due-steps")

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Send ``ref`` to its queue now, or when ``eta`` has passed (see the module)."""
        if eta is not None and eta > utcnow():
            self._timer.add(eta + DUE_MARGIN, lambda: self._send(ref))
            return
        self._send(ref)

    def close(self) -> None:
        """Stop the timer thread; steps still waiting are the reconciler's."""
        self._timer.close()

    def labels(self, ref: StepRef) -> tuple[str | None, dict[str, Any]]:
        """(shadow name, keyword arguments) monitors show for ``ref``; none if unknown.

        Only ever a label: a plan that cannot be read (the store is away) leaves the
        message as it was, never unsent.
        """
        shadow, kwargs, _ = self._described(ref)
        return shadow, kwargs

    def _described(self, ref: StepRef) -> tuple[str | None, dict[str, Any], bool]:
        """The labels of ``ref``, and whether its step is brief (True if unknown)."""
        if self.plans is None:
            return None, {}, True
        try:
            plan = self.plans(ref.run_id)
            step = plan.step(ref.step_key)
        except Exception:  # a label is not worth a lost wake-up call
            log.debug("no labels for step %s of run %s", ref.step_key, ref.run_id, exc_info=True)
            return None, {}, True
        return step_task_name(step.type), {"pipeline": plan.pipeline}, step.brief

    def _send(self, ref: StepRef) -> None:
        shadow, kwargs, brief = self._described(ref)
        queue = ref.queue if self.router is None else self.router.queue_for(ref, brief)
        try:
            self.app.send_task(
                RUN_STEP_TASK,
                args=(ref.run_id, ref.step_key, ref.attempt),
                kwargs=kwargs,
                queue=queue,
                ignore_result=True,
                shadow=shadow,
            )
        except Exception as exc:  # any failure to send: the step is queued in the database
            log.warning(
                "could not send step %s (attempt %d) of run %s to queue %s (%s); "
                "the reconciler will send it again",
                ref.step_key,
                ref.attempt,
                ref.run_id,
                ref.queue,
                exc,
            )


def broker_ping(app: Celery, timeout: float = 2.0) -> None:
    """Raise BrokerUnavailable unless the broker answers within about ``timeout`` seconds.

    For the API's ``/readyz``: it opens a connection and a channel (on Redis that is
    a PING), then closes them.
    """
    try:
        with app.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            conn.default_channel  # noqa: B018  (opening the channel is the round trip)
    except Exception as exc:  # whatever the transport raises, the answer is "not ready"
        raise BrokerUnavailable(f"broker unavailable: {exc}") from exc
