"""The monitor: one thread per process that looks after the attempts running in it.

It flushes their log lines every ``log_flush_seconds``, stops an attempt at its
deadline, renews the leases of all of them every ``heartbeat_seconds`` (one statement),
and stops those whose run was cancelled by another process. It also knows which runs
ended while some of their steps still ran here, so their workspaces go only once the
last of those steps is done.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.settings import Settings

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import Store
    from conveyor.orchestrator.engine.context import Context


class Running(NamedTuple):
    """An attempt running in this process."""

    ref: StepRef
    ctx: Context
    step_id: str


class Monitor:
    """Log flushes, deadlines, leases and cancellation of the attempts running here."""

    def __init__(self, store: Store, owner: str, settings: Settings) -> None:
        self.store, self.owner, self.settings = store, owner, settings
        self._active: dict[str, Running] = {}
        # Runs that ended while some of their steps still ran here.
        self._over: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def track(self, step_id: str, ref: StepRef, ctx: Context) -> None:
        """Look after this attempt until ``untrack``; starts the thread on first use."""
        with self._lock:
            self._active[_key(ref)] = Running(ref, ctx, step_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="conveyor-monitor", daemon=True
                )
                self._thread.start()

    def untrack(self, ref: StepRef) -> None:
        """The attempt is over: stop looking after it."""
        with self._lock:
            self._active.pop(_key(ref), None)

    def run_over(self, run_id: str) -> bool:
        """The run ended: True when no step of it runs here (its workspace can go now)."""
        with self._lock:
            if self._busy(run_id):
                self._over.add(run_id)
                return False
            return True

    def released(self, run_id: str) -> bool:
        """A step of the run is done: True when it was the last one here of a run over."""
        with self._lock:
            if self._busy(run_id) or run_id not in self._over:
                return False
            self._over.discard(run_id)
            return True

    def cancel_run(self, run_id: str) -> None:
        """Tell every step of ``run_id`` running here to stop."""
        with self._lock:
            contexts = [r.ctx for r in self._active.values() if r.ref.run_id == run_id]
        for ctx in contexts:
            ctx.cancel.set()

    def stop(self) -> None:
        """Stop the thread."""
        self._stopping.set()

    def _busy(self, run_id: str) -> bool:
        return any(r.ref.run_id == run_id for r in self._active.values())

    def _watch(self) -> None:
        last_beat = time.monotonic()
        while not self._stopping.wait(min(0.1, self.settings.log_flush_seconds)):
            with self._lock:
                active = list(self._active.values())
            now = time.monotonic()
            for running in active:
                _tick(running.ctx, now)
            if now - last_beat >= self.settings.heartbeat_seconds:
                last_beat = now
                # This thread keeps every step's deadline: one bad beat must not end it.
                with contextlib.suppress(Exception):
                    self._heartbeat(active)

    def _heartbeat(self, active: list[Running]) -> None:
        until = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        try:
            states = self.store.renew_leases([r.step_id for r in active], self.owner, until)
        except ConveyorError:
            return
        for running in active:
            if states.get(running.step_id) == "cancelled":  # cancelled by another process
                with self._lock:
                    self._over.add(running.ref.run_id)
                running.ctx.cancel.set()


def _tick(ctx: Context, now: float) -> None:
    if ctx.deadline is not None and now >= ctx.deadline and not ctx.cancel.is_set():
        ctx.timed_out = True
        ctx.cancel.set()
    # The store may be away for a moment: the lines stay buffered for the next tick.
    with contextlib.suppress(Exception):
        ctx.log.flush()


def _key(ref: StepRef) -> str:
    return ref.run_id + "\0" + ref.step_key
