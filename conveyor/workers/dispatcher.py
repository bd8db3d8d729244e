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
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import Celery

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine import DueTimer
from conveyor.orchestrator.errors import BrokerUnavailable

from .queues import RUN_STEP_TASK

log = logging.getLogger("conveyor.workers.dispatch")

#: Sent this long after a step is due, so a worker whose clock runs a little behind
#: does not find it early (and drop the message as an early delivery).
DUE_MARGIN = timedelta(milliseconds=200)


class CeleryDispatcher:
    """The orchestrator's Dispatcher over Celery: one ``run_step`` message per step."""

    def __init__(self, app: Celery) -> None:
        self.app = app
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

    def _send(self, ref: StepRef) -> None:
        try:
            self.app.send_task(
                RUN_STEP_TASK,
                args=(ref.run_id, ref.step_key, ref.attempt),
                queue=ref.queue,
                ignore_result=True,
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
