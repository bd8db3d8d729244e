"""A worker's warm shutdown, as every one of its pool processes sees it.

On SIGTERM Celery stops consuming and waits for the tasks that run to end; it tells
only its main process (``worker_shutting_down``). A pool process running a chain of
steps would go on with the next one, and the shutdown would wait for the whole chain.
So the main process sets a flag in one page of memory shared with its pool
processes, made before Celery forks them; the runtime reads it (``Runtime.stopping``)
and, once it is set, finishes the step it holds but takes no new one: the next step
of a chain goes out as a message, for a worker that stays.
"""

from __future__ import annotations

import mmap
from typing import Any

from celery import signals


class ShutdownFlag:
    """Set in a worker's main process when its shutdown begins; read in every process
    forked after it was made (an anonymous shared mapping)."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 1)

    def set(self, *_: Any, **__: Any) -> None:
        """Mark the shutdown begun (a receiver of Celery's ``worker_shutting_down``)."""
        self._page[0] = 1

    def is_set(self) -> bool:
        """True once this worker's shutdown has begun."""
        return self._page[0] == 1


#: This worker's shutdown. Made on import, in the main process, before Celery forks.
SHUTDOWN = ShutdownFlag()


def watch_shutdown() -> None:
    """Set ``SHUTDOWN`` when Celery begins a warm (or cold) shutdown of this worker."""
    signals.worker_shutting_down.connect(
        SHUTDOWN.set, weak=False, dispatch_uid="conveyor-worker-shutdown"
    )
