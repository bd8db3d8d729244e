"""Live progress of a run: a refreshing table on a terminal, event lines elsewhere."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.records import LogRecord, RunRecord
from conveyor.orchestrator.store import Store

from .render import ICON, STYLE, run_header, steps_table

TAIL_LINES = 3


def follow(
    store: Store,
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
    store: Store, run_id: str, console: Console, wait: Callable[[float], RunRecord], interval: float
) -> RunRecord:
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            run = wait(interval)
            live.update(_screen(store, run))
            if run.status.terminal:
                return run


def _screen(store: Store, run: RunRecord) -> Group:
    steps = store.list_steps(run.id)
    tails: dict[str, list[LogRecord]] = {
        s.key: store.tail_logs(run.id, s.key, TAIL_LINES)
        for s in steps
        if s.status in ("running", "failed")
    }
    return Group(run_header(run), steps_table(steps, tails))


def _follow_lines(
    store: Store, run_id: str, console: Console, wait: Callable[[float], RunRecord], interval: float
) -> RunRecord:
    seen = 0
    while True:
        run = wait(interval)
        for event in store.list_events(run_id, after=seen):
            seen = event.seq
            if event.step_key and event.type.startswith("step."):
                status = event.type.split(".", 1)[1]
                if "retry_in" in event.payload:
                    status = f"retrying in {format_duration(event.payload['retry_in'])}"
                offset = (event.created_at - run.created_at).total_seconds()
                line = Text(f"{format_duration(offset):>7} ", style="dim")
                line.append(
                    f"{ICON.get(status, '?')} {event.step_key} {status}",
                    style=STYLE.get(status, ""),
                )
                error = event.payload.get("error") or event.payload.get("reason")
                if error:
                    line.append(f": {error}")
                console.print(line, soft_wrap=True)
        if run.status.terminal:
            return run
