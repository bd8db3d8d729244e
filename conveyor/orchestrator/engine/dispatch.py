"""The inline dispatcher: steps run on a thread pool in this process.

Used when no broker is configured (``conveyor run``). Celery's dispatcher lives in
``workers/`` and has the same one method.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.due import DueTimer

log = logging.getLogger("conveyor.dispatch")
#: How often a step whose execution raised is delivered again before giving up.
MAX_REDELIVERIES = 8


class InlineDispatcher:
    """Runs ``execute(ref)`` on a pool of threads, honouring ``eta`` with a timer thread."""

    def __init__(self, max_workers: int = 4, redelivery_delay: float = 1.0) -> None:
        self.redelivery_delay = redelivery_delay
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="conveyor-step")
        self._execute: Callable[[StepRef], None] | None = None
        self._timer = DueTimer("conveyor-timers")
        self._closed = False

    def bind(self, execute: Callable[[StepRef], None]) -> None:
        """Set what runs a dispatched step (the executor, built after the runtime)."""
        self._execute = execute

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Run ``ref`` now, or once ``eta`` has passed."""
        if self._closed:
            return
        if eta is None or eta <= utcnow():
            self._submit(ref)
            return
        self._later(ref, eta, 0)

    def _later(self, ref: StepRef, eta: datetime, tries: int) -> None:
        self._timer.add(eta, lambda: self._submit(ref, tries))

    def _submit(self, ref: StepRef, tries: int = 0) -> None:
        # Shutting down: the step stays queued in the store, nothing is lost.
        with contextlib.suppress(RuntimeError):
            self._pool.submit(self._run, ref, tries)

    def _run(self, ref: StepRef, tries: int) -> None:
        """Execute; if that blows up (the store away, say), deliver it again later.

        Redelivery is safe: a claim that already happened makes the new one a no-op.
        """
        assert self._execute is not None, "bind() the executor before dispatching"
        try:
            self._execute(ref)
        except Exception:
            if tries >= MAX_REDELIVERIES:
                log.exception("giving up on step %s of run %s", ref.step_key, ref.run_id)
                return
            delay = min(self.redelivery_delay * 2.0**tries, 30.0)
            log.warning("step %s of run %s: redelivering in %.0fs", ref.step_key, ref.run_id, delay)
            self._later(ref, utcnow() + timedelta(seconds=delay), tries + 1)

    def close(self, wait: bool = True) -> None:
        """Stop taking work; wait for running steps when ``wait``."""
        self._closed = True
        self._timer.close()
        self._pool.shutdown(wait=wait, cancel_futures=True)
