"""The monitor: two threads per process that look after the attempts running in it.

The lease thread flushes their log lines every ``log_flush_seconds``, renews the leases
of all of them every ``heartbeat_seconds`` (one statement), and stops those whose run
was cancelled by another process. The watch thread never touches the store, so a store
that hangs cannot stop it: it stops an attempt at its deadline, and fences by time. An
attempt whose lease was not renewed for ``lease_seconds`` minus ``lease_margin_seconds``
(or that the store says is no longer running) is killed, process tree and all, before
its lease can run out and the step be handed to another worker; the executor then
records nothing for it (``untrack`` says it was fenced), and the reconciler takes the
step back as it does a dead worker's. The monitor also knows which runs ended while
some of their steps still ran here, so their workspaces go only once the last of those
steps is done.
"""

from __future__ import annotations

import contextlib
import logging
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

log = logging.getLogger("conveyor.engine")
#: Step statuses under which an attempt running here still owns its step.
_STILL_OURS = frozenset({"running", "cancelled"})


class Running(NamedTuple):
    """An attempt running in this process."""

    ref: StepRef
    ctx: Context
    step_id: str


class Monitor:
    """Log flushes, deadlines, leases, fencing and cancellation of the attempts running here."""

    def __init__(self, store: Store, owner: str, settings: Settings) -> None:
        self.store, self.owner, self.settings = store, owner, settings
        self._active: dict[str, Running] = {}
        #: When (time.monotonic) each attempt's lease was last known to be renewed.
        self._renewed: dict[str, float] = {}
        #: Attempts stopped because their lease could not be kept, with the reason.
        self._fenced: dict[str, str] = {}
        # Runs that ended while some of their steps still ran here.
        self._over: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def fence_after(self) -> float:
        """Seconds without a renewal after which an attempt stops itself."""
        lease = self.settings.lease_seconds
        return lease - min(self.settings.lease_margin_seconds, lease / 3)

    def track(
        self, step_id: str, ref: StepRef, ctx: Context, leased_at: float | None = None
    ) -> None:
        """Look after this attempt until ``untrack``; starts the threads on first use.

        ``leased_at``: when (time.monotonic) its lease was taken, at the latest.
        """
        key = _key(ref)
        with self._lock:
            self._active[key] = Running(ref, ctx, step_id)
            self._renewed[key] = time.monotonic() if leased_at is None else leased_at
            self._fenced.pop(key, None)
            if not self._threads:
                for name, target in (("watch", self._watch), ("lease", self._keep)):
                    thread = threading.Thread(target=target, name=f"conveyor-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def untrack(self, ref: StepRef) -> str | None:
        """The attempt is over: stop looking after it. Why it was fenced, if it was."""
        key = _key(ref)
        with self._lock:
            self._active.pop(key, None)
            self._renewed.pop(key, None)
            return self._fenced.pop(key, None)

    def fenced(self, ref: StepRef) -> bool:
        """True once the attempt lost its lease (it must change nothing more)."""
        with self._lock:
            return _key(ref) in self._fenced

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
        """Stop the threads."""
        self._stopping.set()

    def _busy(self, run_id: str) -> bool:
        return any(r.ref.run_id == run_id for r in self._active.values())

    def _watch(self) -> None:
        """Deadlines and fencing: memory only, so nothing the store does can hold it up."""
        while not self._stopping.wait(0.05):
            with self._lock:
                active = [(r, self._renewed.get(k)) for k, r in self._active.items()]
            now = time.monotonic()
            for running, renewed in active:
                _tick(running.ctx, now)
                if renewed is not None and now - renewed >= self.fence_after:
                    self._fence(running, f"its lease was not renewed for {now - renewed:.1f}s")

    def _keep(self) -> None:
        """Log flushes and lease renewals: the store's side."""
        last_beat = time.monotonic()
        while not self._stopping.wait(min(0.1, self.settings.log_flush_seconds)):
            with self._lock:
                active = list(self._active.values())
            for running in active:
                # The store may be away for a moment: the lines stay buffered for later.
                with contextlib.suppress(Exception):
                    running.ctx.log.flush()
            if time.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                last_beat = time.monotonic()
                # One bad beat must not end this thread.
                with contextlib.suppress(Exception):
                    self._heartbeat(active)

    def _heartbeat(self, active: list[Running]) -> None:
        if not active:
            return
        asked = time.monotonic()  # the new lease counts from before the statement
        until = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        try:
            states = self.store.renew_leases([r.step_id for r in active], self.owner, until)
        except ConveyorError:
            return
        for running in active:
            state = states.get(running.step_id)
            if state == "cancelled":  # cancelled by another process
                with self._lock:
                    self._over.add(running.ref.run_id)
                running.ctx.cancel.set()
            if state in _STILL_OURS:
                key = _key(running.ref)
                with self._lock:
                    if key in self._renewed:
                        self._renewed[key] = max(self._renewed[key], asked)
            elif state is not None:  # requeued, failed...: its lease went to someone else
                self._fence(running, f"the store has the step {state}")

    def _fence(self, running: Running, why: str) -> None:
        """Stop an attempt that may no longer hold its lease: kill its processes now."""
        key = _key(running.ref)
        with self._lock:
            if key not in self._active or key in self._fenced:
                return
            self._fenced[key] = why
        ref = running.ref
        log.warning(
            "stopping step %s (attempt %d) of run %s: %s",
            ref.step_key,
            ref.attempt,
            ref.run_id,
            why,
        )
        running.ctx.cancel.set()
        # Closing its sandboxes kills their process trees at once, even while the step's
        # own thread waits on something else (the store, a pipe).
        with contextlib.suppress(Exception):
            running.ctx.close()


def _tick(ctx: Context, now: float) -> None:
    if ctx.deadline is not None and now >= ctx.deadline and not ctx.cancel.is_set():
        ctx.timed_out = True
        ctx.cancel.set()


def _key(ref: StepRef) -> str:
    return ref.run_id + "\0" + ref.step_key
