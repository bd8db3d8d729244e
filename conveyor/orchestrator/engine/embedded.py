"""Conveyor in one process: SQLite (or any database), a thread pool, no services."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef, StepType
from conveyor.orchestrator.engine.dispatch import InlineDispatcher
from conveyor.orchestrator.engine.sources import HeldDispatches, copy_source
from conveyor.orchestrator.engine.wiring import open_store, wire
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.pipeline.plan import Compiled, Compiler, ExecutionPlan
from conveyor.orchestrator.plugins import Sandboxes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import RunRecord
from conveyor.orchestrator.store.sql import SqlStore

log = logging.getLogger("conveyor.embedded")


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
        if self.workspace_source is None:
            return self.runtime.submit(
                plan, source, params or {}, secrets=secrets, submitted_by=submitted_by
            )
        with self._seeding:
            self.held.hold()
            run: RunRecord | None = None
            try:
                run = self.runtime.submit(
                    plan, source, params or {}, secrets=secrets, submitted_by=submitted_by
                )
            finally:
                self.held.keep(run.id if run else None)
        self._seed(run.id, self.workspace_source)
        return run

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
        event = self._finished.get(run_id)
        if event is not None:
            event.set()
