"""Live progress of a run: a refreshing table on a terminal, event lines elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.store import EventRecord, LogRecord, RunRecord, StepRecord

from .render import ICON, STYLE, run_header, steps_table

TAIL_LINES = 3
RETRY_ICON = "↻"


class RunReader(Protocol):
    """What following a run reads: the store here, or the HTTP API (``conveyor watch``)."""

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in plan order."""
        ...

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """The run's events after ``after``."""
        ...

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last lines of a step's log."""
        ...


def follow(
    store: RunReader,
    run_id: str,
    console: Console,
    wait: Callable[[float], RunRecord],
    *,
    interval: float = 0.25,
) -> RunRecord:
    """Show the run until it is over; ``wait(seconds)`` waits and returns the run."""
    if console.is_terminal:
        return _follow_live(store, run_id, console, wait, interval)
    return _follow_lines(store, run_id, console, wait, interval)


def _follow_live(
    store: RunReader,
    run_id: str,
    console: Console,
    wait: Callable[[float], RunRecord],
    interval: float,
) -> RunRecord:
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            run = wait(interval)
            live.update(_screen(store, run))
            if run.status.terminal:
                return run


def _screen(store: RunReader, run: RunRecord) -> Group:
    steps = store.list_steps(run.id)
    tails: dict[str, list[LogRecord]] = {
        s.key: store.tail_logs(run.id, s.key, TAIL_LINES, attempt=s.attempts)
        for s in steps
        if s.status in ("running", "failed")
    }
    return Group(run_header(run), steps_table(steps, tails))


def _follow_lines(
    store: RunReader,
    run_id: str,
    console: Console,
    wait: Callable[[float], RunRecord],
    interval: float,
) -> RunRecord:
    seen = 0
    while True:
        run = wait(interval)
        for event in store.list_events(run_id, after=seen):
            seen = event.seq
            line = progress_line(event, run)
            if line is not None:
                console.print(line, soft_wrap=True)
        if run.status.terminal:
            return run


def progress_line(event: EventRecord, run: RunRecord) -> Text | None:
    """A step event as one line of progress (None for events that are not a step's)."""
    if not event.step_key or not event.type.startswith("step."):
        return None
    status = event.type.split(".", 1)[1]
    icon, style = ICON.get(status, "?"), STYLE.get(status, "")
    if "retry_in" in event.payload:
        status = f"failed, retrying in {format_duration(event.payload['retry_in'])}"
        icon, style = RETRY_ICON, "yellow"
    offset = (event.created_at - run.created_at).total_seconds()
    line = Text(f"{format_duration(offset):>7} ", style="dim")
    line.append(f"{icon} {event.step_key} {status}", style=style)
    error = event.payload.get("error") or event.payload.get("reason")
    if error:
        line.append(f": {error}")
    return line
