"""Conveyor in one process: SQLite (or any database), a thread pool, no services.

No reconciler runs here, and no other process runs a run's steps: a run this process
started is driven by this process alone. So each one is held by a lock file in
``data_dir/owners`` (an ``flock`` the kernel releases however the process ends), named
for the run's idempotency key. On the next start of an engine, or of any command that
opens the local store (``recover_abandoned``), a lock file nobody holds is a run whose
process died: its running steps fail as lost (the reconciler's words: ``lost its
worker``), what waited is cancelled, the run fails, and its workspace is removed. Its
step processes died with their process already (the local sandbox's guard).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef, StepType
from conveyor.orchestrator.engine.dispatch import InlineDispatcher
from conveyor.orchestrator.engine.opening import (
    OWNERS_DIR,
    open_store,
    owner_name,
    recover_abandoned,
)
from conveyor.orchestrator.engine.sources import HeldDispatches, copy_source
from conveyor.orchestrator.engine.wiring import wire
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.pipeline.plan import Compiled, Compiler, ExecutionPlan
from conveyor.orchestrator.plugins import Sandboxes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import RunRecord
from conveyor.orchestrator.store.sql import SqlStore

log = logging.getLogger("conveyor.embedded")


class RunLocks:
    """The lock files of the runs this process drives: held while it lives.

    A file is made under a temporary name, locked, then renamed into place, so that
    whoever finds ``<key>.lock`` unlocked knows its process is gone (not starting).
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / OWNERS_DIR
        self._held: dict[str, int] = {}  # key -> locked file descriptor
        self._runs: dict[str, str] = {}  # run id -> key
        self._lock = threading.Lock()

    def new(self) -> str:
        """A new key, its lock file held by this process; name the run with it."""
        key = f"embedded-{uuid.uuid4().hex}"
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = self.root / f".{key}.tmp"
        fd = os.open(temporary, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{owner_name()}\n".encode())
            os.rename(temporary, self.root / f"{key}.lock")
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        with self._lock:
            self._held[key] = fd
        return key

    def bind(self, key: str, run_id: str) -> None:
        """The run ``key`` names is ``run_id``."""
        with self._lock:
            self._runs[run_id] = key

    def release(self, run_id: str) -> None:
        """The run is over: its lock file goes."""
        with self._lock:
            key = self._runs.pop(run_id, None)
        if key is not None:
            self.drop(key)

    def drop(self, key: str) -> None:
        """Remove a lock file and let go of it."""
        with self._lock:
            fd = self._held.pop(key, None)
        (self.root / f"{key}.lock").unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Let go of every lock: runs not over by now are found by the next start."""
        with self._lock:
            held, self._held, self._runs = self._held, {}, {}
        for fd in held.values():
            os.close(fd)


class EmbeddedEngine:
    """The core (see ``wiring``) with an inline dispatcher: steps run in this process."""

    def __init__(
        self,
        settings: Settings,
        *,
        step_types: Mapping[str, StepType] | None = None,
        sandboxes: Sandboxes | None = None,
        store: SqlStore | None = None,
        compiler: Compiler | None = None,
    ) -> None:
        self.settings = settings
        self.dispatcher = InlineDispatcher(settings.max_parallel)
        #: Holds a run's first steps back while its workspace is seeded with the source.
        self.held = HeldDispatches(self.dispatcher)
        #: A directory copied into each run's workspace before its first step (--source).
        self.workspace_source: Path | None = None
        self._seeding = threading.Lock()
        self.core = wire(
            settings,
            store or open_store(settings),
            dispatcher=self.held,
            step_types=step_types,
            sandboxes=sandboxes or Sandboxes(settings),
            compiler=compiler,
        )
        self.store, self.compiler, self.runtime = (
            self.core.store,
            self.core.compiler,
            self.core.runtime,
        )
        self.executor = self.core.running()
        self.sandboxes = self.executor.sandboxes
        self.locks = RunLocks(settings.data_dir)
        #: Runs found abandoned by a process that died, failed when this engine started.
        self.recovered = self._recover()
        self.dispatcher.bind(self._execute)
        self._finished: dict[str, threading.Event] = {}
        #: No reconciler runs here: the first run an engine starts sweeps expired artifacts.
        self.retention = self.core.retention
        self._swept = False

    def compile(self, text: str | bytes) -> Compiled:
        """Compile a pipeline file (SpecError lists every problem)."""
        return self.compiler.compile(text)

    def start(
        self,
        plan: ExecutionPlan,
        source: str,
        params: Mapping[str, Any] | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        submitted_by: str | None = None,
    ) -> RunRecord:
        """Create the run and start its first steps; returns at once.

        With ``workspace_source`` set, the run's workspace holds a copy of it before any
        step is dispatched; if the copy fails the run is cancelled with the reason.
        """
        self._sweep_artifacts()
        key = self.locks.new()
        try:
            run = self._submit(plan, source, params, secrets, submitted_by, key)
        except BaseException:
            self.locks.drop(key)
            raise
        if self.workspace_source is not None:
            self._seed(run.id, self.workspace_source)
        return run

    def _submit(
        self,
        plan: ExecutionPlan,
        source: str,
        params: Mapping[str, Any] | None,
        secrets: Mapping[str, str] | None,
        submitted_by: str | None,
        key: str,
    ) -> RunRecord:
        """Create the run named ``key`` (held back while its workspace is seeded)."""

        def submit() -> RunRecord:
            run = self.runtime.submit(
                plan,
                source,
                params or {},
                secrets=secrets,
                submitted_by=submitted_by,
                idempotency_key=key,
            )
            self.locks.bind(key, run.id)
            return run

        if self.workspace_source is None:
            return submit()
        with self._seeding:
            self.held.hold()
            run: RunRecord | None = None
            try:
                run = submit()
            finally:
                self.held.keep(run.id if run else None)
        return run

    def _recover(self) -> list[str]:
        """Fail the runs of embedded processes that died (see the module's docstring)."""
        try:
            return recover_abandoned(self.store, self.settings.data_dir, self._cleanup)
        except ConveyorError as exc:
            log.warning("abandoned runs not recovered: %s", exc.message)
            return []

    def _cleanup(self, run_id: str) -> None:
        # The local sandbox kind owns the workspace directory.
        self.sandboxes.get("local")
        self.sandboxes.cleanup_run(run_id)

    def _seed(self, run_id: str, directory: Path) -> None:
        """Copy ``directory`` into the run's workspace, then let its steps go."""
        # The local sandbox kind owns the workspace directory: asking for it here makes
        # the run's end remove the copy even when no step opens a sandbox.
        self.sandboxes.get("local")
        try:
            copy_source(
                directory, self.settings.workspace_root / run_id, exclude=[self.settings.data_dir]
            )
        except ConveyorError as exc:
            self.held.drop(run_id)
            self.cancel(run_id, f"cancelled: {exc.message}")
            raise
        self.held.release(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> None:
        """Cancel the run, and stop at once its steps running here."""
        self.runtime.cancel(run_id, reason)
        self.executor.signal_cancel(run_id)
        self._over(run_id)

    def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.25) -> RunRecord:
        """Block until the run is over (or ``timeout`` passes) and return it."""
        event = self._finished.setdefault(run_id, threading.Event())
        try:
            return self._wait(run_id, event, timeout, poll)
        finally:
            self._finished.pop(run_id, None)

    def _wait(
        self, run_id: str, event: threading.Event, timeout: float | None, poll: float
    ) -> RunRecord:
        waited = 0.0
        while True:
            run = self.store.get_run(run_id)
            if run.status.terminal:
                # Ended elsewhere (`conveyor cancel` in another terminal, say): stop what
                # still runs here now rather than at the next heartbeat.
                self.executor.signal_cancel(run_id)
                self.locks.release(run_id)
                return run
            if timeout is not None and waited >= timeout:
                return run
            overdue = run.deadline is not None and run.deadline <= utcnow()
            if overdue and self.runtime.expire(run_id):
                self.executor.signal_cancel(run_id)
                self._over(run_id)
            event.wait(poll)
            waited += poll

    def run(self, text: str | bytes, pipeline: str | None = None, **kwargs: Any) -> RunRecord:
        """Compile, start and wait: the whole of ``conveyor run`` without the terminal."""
        compiled = self.compile(text)
        run = self.start(compiled.select(pipeline), compiled.source, **kwargs)
        return self.wait(run.id)

    def close(self) -> None:
        """Wait for running steps, then release threads and connections."""
        self.dispatcher.close(wait=True)
        self.executor.stop()
        self.locks.close()
        self.store.close()

    def _sweep_artifacts(self) -> None:
        """Delete artifacts past their retention, once per engine; never fails a run."""
        if self._swept:
            return
        self._swept = True
        try:
            self.retention.sweep()
        except ConveyorError as exc:
            log.warning("artifact retention skipped: %s", exc.message)

    def _execute(self, ref: StepRef) -> None:
        """Run a step the dispatcher hands over; wake ``wait`` when its run is over."""
        if self.executor.execute(ref):
            self._over(ref.run_id)

    def _over(self, run_id: str) -> None:
        # The executor removes the run's workspace (once no step of it runs here).
        self.executor.run_over(run_id)
        self.locks.release(run_id)
        event = self._finished.get(run_id)
        if event is not None:
            event.set()
