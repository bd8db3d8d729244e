"""A heap of (when, action) and one daemon thread that runs each action when it is due.

Both dispatchers use it for steps that must wait (a retry's backoff, a redelivery):
the step waits here and in the database (``available_at``), not in a broker.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import datetime

from conveyor.orchestrator.clock import utcnow


class DueTimer:
    """Runs actions at their time, in order, on one thread started on first use."""

    def __init__(self, name: str = "conveyor-due") -> None:
        self._name = name
        self._heap: list[tuple[datetime, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, due: datetime, action: Callable[[], None]) -> None:
        """Run ``action`` once ``due`` has passed (never, once closed)."""
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._heap, (due, next(self._counter), action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        """Stop the thread; what it still held is dropped (the database still has it)."""
        with self._wake:
            self._closed = True
            self._heap.clear()
            self._wake.notify_all()

    def _loop(self) -> None:
        while (action := self._next_due()) is not None:
            action()

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the earliest action to be due and pop it; None once closed."""
        with self._wake:
            while not self._closed:
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = (self._heap[0][0] - utcnow()).total_seconds()
                if wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._wake.wait(wait)
            return None
