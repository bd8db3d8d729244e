"""``conveyor run``: start a run, follow it, and stop it cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any

from rich.markup import escape
from rich.text import Text

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.pipeline import ExecutionPlan
from conveyor.orchestrator.store import RunRecord

from .consoles import err, out
from .progress import RunReader, follow
from .render import run_header

TAIL_LINES = 15
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Signals:
    """SIGINT and SIGTERM both stop ``conveyor run`` by cancelling the run.

    Until :meth:`arm` a signal is only noted, so that it cannot strike between the
    run being created and this process knowing its id (which would leave it running).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.armed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in _STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def arm(self) -> None:
        """From now on a signal interrupts at once (and one noted already does now)."""
        self.armed = True
        if self.received is not None:
            raise KeyboardInterrupt

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        if self.armed:
            raise KeyboardInterrupt


def execute(
    engine: EmbeddedEngine,
    plan: ExecutionPlan,
    source: str,
    params: Mapping[str, Any],
    secrets: Mapping[str, str],
    user: str,
) -> int:
    """Run ``plan`` to its end, showing progress; return the process's exit code."""
    with _Signals() as signals:
        try:
            record = engine.start(plan, source, params, secrets=secrets, submitted_by=user)
            out.print(
                f"run [bold]{record.id}[/] of [bold cyan]{escape(plan.pipeline)}[/]: "
                f"{len(plan.steps)} steps"
            )
            try:
                signals.arm()
                final = _follow(engine, record.id)
            except KeyboardInterrupt:
                signals.armed = False  # a second Ctrl-C must not cut the clean-up short
                _interrupt(engine, record.id, signals.received or signal.SIGINT)
            except Exception as exc:  # this process cannot follow the run: stop it too
                _abandon(engine, record.id, exc)
                raise
            else:
                if final.status != "succeeded":
                    # Cancelled from another process: stop our steps now, not at the
                    # next lease heartbeat.
                    engine.executor.signal_cancel(record.id)
        finally:
            engine.close()
    final = engine.store.get_run(record.id)
    # On a terminal the live table already ends with the run's line.
    summary(engine.store, final, header=not out.is_terminal or signals.received is not None)
    if signals.received is not None:
        return 128 + signals.received
    return 0 if final.status == "succeeded" else 1


def _follow(engine: EmbeddedEngine, run_id: str) -> RunRecord:
    return follow(engine.store, run_id, out, lambda t: engine.wait(run_id, timeout=t, poll=t))


def _interrupt(engine: EmbeddedEngine, run_id: str, signum: int) -> None:
    name = signal.Signals(signum).name
    err.print(f"[yellow]{name}: cancelling the run…[/]")
    with contextlib.suppress(ConveyorError):  # it may have finished meanwhile
        engine.cancel(run_id, f"cancelled: interrupted by {name}")
    engine.dispatcher.close(wait=True)


def _abandon(engine: EmbeddedEngine, run_id: str, error: Exception) -> None:
    """Cancel the run this process can no longer see through, rather than leave it
    ``running`` for ever with nobody to run its steps."""
    with contextlib.suppress(ConveyorError):
        engine.cancel(run_id, f"cancelled: conveyor run failed ({type(error).__name__})")


def summary(store: RunReader, run: RunRecord, *, header: bool = True) -> None:
    """The run's last line; for a run that did not succeed, why, and the log tails."""
    if header:
        out.print(run_header(run))
    if run.status == "succeeded":
        return
    err.print(Text(f"✗ {run.error or run.status}", style="bold red"))
    for step in store.list_steps(run.id):
        stopped = step.status == "cancelled" and step.started_at is not None
        if step.status != "failed" and not stopped:
            continue
        tail = store.tail_logs(run.id, step.key, TAIL_LINES, attempt=step.attempts)
        if tail:  # a step whose condition failed has no log
            title = f"--- last lines of {step.key} (attempt {step.attempts}, {step.status}) ---"
            err.print(Text(title, style="bold"))
            for line in tail:
                err.print(line.text, markup=False)
