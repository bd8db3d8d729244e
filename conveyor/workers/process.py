"""One worker process's Conveyor: store, runtime, executor and reconciler.

Wired by ``engine.wiring.wire`` as the embedded engine (``engine/embedded.py``) is, with
the Celery dispatcher in place of the thread pool. It is built lazily, in the process
that runs tasks: Celery forks its pool children after start-up, and database
connections must never cross a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from celery import Celery

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine import (
    Core,
    Executor,
    Reconciler,
    Runtime,
    Watch,
    open_store,
    wire,
)
from conveyor.orchestrator.errors import NotFound, StoreUnavailable
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import SqlStore

from .dispatcher import CeleryDispatcher
from .hosts import HostRouter, handing_over, served_queues
from .shutdown import SHUTDOWN

log = logging.getLogger("conveyor.workers")
T = TypeVar("T")

#: How long a task waits out a database that is away (a Postgres restart) before it
#: gives up; the step stays queued in the database and the reconciler sends it again.
STORE_PATIENCE = 60.0


def open_current_store(settings: Settings) -> SqlStore:
    """The settings' store, refusing (SchemaOutdated) a schema that is not current.

    No pre-ping: every write a worker makes is retried while the store is unavailable
    (``patiently``, the executor's result writes).
    """
    return open_store(settings, worker=True)


@dataclass
class WorkerProcess:
    """Everything one worker process needs to run steps and reconcile."""

    core: Core
    dispatcher: CeleryDispatcher

    @classmethod
    def build(
        cls, app: Celery, settings: Settings, owner: str, queues: Collection[str] | None
    ) -> WorkerProcess:
        """Wire the pieces for this process; ``queues`` are those its worker consumes."""
        dispatcher = CeleryDispatcher(app)
        store = open_current_store(settings)
        core = wire(
            settings,
            store,
            dispatcher=dispatcher,
            owner=owner,
            queues=queues,
            stopping=SHUTDOWN.is_set,  # a warm shutdown takes no new step
            handoff=handing_over(settings),
        )
        if handing_over(settings):
            dispatcher.router = HostRouter(store, settings)
        dispatcher.plans = core.runtime.plan_of  # labels of the messages it sends
        log.info("conveyor worker process %s ready for queues %s", owner, _names(queues))
        return cls(core, dispatcher)

    @property
    def store(self) -> SqlStore:
        """The process's store."""
        return self.core.store

    @property
    def runtime(self) -> Runtime:
        """The process's runtime."""
        return self.core.runtime

    @property
    def executor(self) -> Executor:
        """The process's executor."""
        return self.core.running()

    @property
    def reconciler(self) -> Reconciler:
        """The process's reconciler."""
        return self.core.reconciler

    def run_step(self, ref: StepRef, watch: Watch | None = None) -> None:
        """Claim and run ``ref`` (and the steps it continues with); a stale one is a no-op.

        The claim is idempotent, so the whole delivery is simply tried again while the
        database is away: the executor itself already waits to record results.
        ``watch`` hears of every attempt run (what monitors show).
        """
        try:
            patiently(lambda: self.executor.execute(ref, watch))
        except NotFound as exc:  # a run deleted since, or a message meant for another database
            log.warning("dropped step %s of run %s: %s", ref.step_key, ref.run_id, exc.message)

    def reconcile(self) -> None:
        """One reconciler pass; a database that is away is the next pass's problem."""
        try:
            report = self.reconciler.run_once()
        except StoreUnavailable as exc:
            log.warning("reconcile skipped: %s", exc.message)
            return
        if report:
            log.info(
                "reconciled: %d re-dispatched, %d reclaimed, %d stalled runs resumed, "
                "%d runs expired, %d runs' artifacts past their retention deleted",
                report.redispatched,
                report.reclaimed,
                report.resumed,
                report.expired_runs,
                report.expired_artifacts,
            )

    def close(self) -> None:
        """Stop threads and release connections."""
        self.executor.stop()
        self.dispatcher.close()
        self.store.close()


def patiently(work: Callable[[], T], patience: float = STORE_PATIENCE) -> T:
    """Call ``work``, again with backoff while the store is unavailable."""
    delay, waited = 0.2, 0.0
    while True:
        try:
            return work()
        except StoreUnavailable as exc:
            if waited >= patience:
                raise
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc.message)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


class PerProcess:
    """The WorkerProcess of the current process, built on first use after a fork."""

    def __init__(self, build: Callable[[str], WorkerProcess]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._worker: WorkerProcess | None = None

    def get(self, node: str) -> WorkerProcess:
        """This process's WorkerProcess; ``node`` names the worker (``-n``) if built now."""
        with self._lock:
            if self._worker is None or self._pid != os.getpid():
                # A copy inherited through fork holds the parent's connections: drop it
                # without closing them (they are the parent's to close).
                self._worker = self._build(f"{node}:{os.getpid()}")
                self._pid = os.getpid()
            return self._worker


def consumed_queues(app: Celery) -> frozenset[str] | None:
    """The queues this worker consumes (``-Q``), or None outside a worker."""
    names = served_queues(app.amqp.queues.consume_from or ())
    return names or None


def _names(queues: Collection[str] | None) -> str:
    return ",".join(sorted(queues)) if queues is not None else "all"
