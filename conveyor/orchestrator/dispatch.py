"""The inline dispatcher: steps run on a thread pool in this process.

Used when no broker is configured (``conveyor run``). Celery's dispatcher lives in
``workers/`` and has the same one method.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from .contracts import StepRef
from .store import utcnow

log = logging.getLogger("conveyor.dispatch")
#: How often a step whose execution raised is delivered again before giving up.
MAX_REDELIVERIES = 8


class InlineDispatcher:
    """Runs ``execute(ref)`` on a pool of threads, honouring ``eta`` with a timer thread."""

    def __init__(self, max_workers: int = 4, redelivery_delay: float = 1.0) -> None:
        self.redelivery_delay = redelivery_delay
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="conveyor-step")
        self._execute: Callable[[StepRef], None] | None = None
        self._timers: list[tuple[datetime, int, StepRef, int]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._timer_thread: threading.Thread | None = None

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
        with self._wake:
            heapq.heappush(self._timers, (eta, next(self._counter), ref, tries))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(
                    target=self._run_timers, name="conveyor-timers", daemon=True
                )
                self._timer_thread.start()
            self._wake.notify()

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

    def _run_timers(self) -> None:
        with self._wake:
            while not self._closed:
                if not self._timers:
                    self._wake.wait()
                    continue
                eta, _, ref, tries = self._timers[0]
                delay = (eta - utcnow()).total_seconds()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._timers)
                self._submit(ref, tries)

    def close(self, wait: bool = True) -> None:
        """Stop taking work; wait for running steps when ``wait``."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._pool.shutdown(wait=wait, cancel_futures=True)
