"""How runs, steps, events and logs look in a terminal (rich)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.store import EventRecord, LogRecord, RunRecord, StepRecord

STYLE = {
    "pending": "dim",
    "queued": "cyan",
    "running": "bold blue",
    "blocked": "magenta",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "yellow",
}
ICON = {
    "pending": "·",
    "queued": "○",
    "running": "▶",
    "blocked": "⏸",
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "↷",
    "cancelled": "⊘",
}


def status_text(status: str) -> Text:
    """A coloured status with its icon."""
    return Text(f"{ICON.get(status, '?')} {status}", style=STYLE.get(status, ""))


def when(moment: datetime | None) -> str:
    """Local time of a timestamp, short."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def step_duration(step: StepRecord) -> str:
    """How long a step ran, or has been running."""
    if step.started_at and step.status == "running":
        return format_duration((datetime.now(UTC) - step.started_at).total_seconds())
    if step.status in ("queued", "pending"):
        return "-"  # a retry waiting for its turn: the last attempt's time is in `show`
    return format_duration(step.duration)


def run_duration(run: RunRecord) -> str:
    """How long a run took, or has taken so far."""
    end = run.completed_at or datetime.now(UTC)
    return format_duration((end - run.created_at).total_seconds())


def runs_table(runs: Sequence[RunRecord]) -> Table:
    """``conveyor runs``."""
    table = Table(box=None, header_style="bold")
    table.add_column("RUN", no_wrap=True, min_width=36)  # ids are copied: never cut them
    for column in ("PIPELINE", "STATUS", "STARTED", "DURATION"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        table.add_row(
            run.id,
            Text(run.pipeline),
            status_text(run.status),
            when(run.created_at),
            run_duration(run),
        )
    return table


def steps_table(
    steps: Sequence[StepRecord],
    tails: dict[str, list[LogRecord]] | None = None,
    *,
    outputs: bool = False,
) -> Table:
    """The steps of a run; with ``tails``, the last log lines under each step."""
    table = Table(box=None, header_style="bold", expand=False)
    for column in ("STEP", "STATUS", "ATTEMPT", "DURATION", "DETAIL"):
        table.add_column(column, overflow="fold")
    for step in steps:
        table.add_row(
            Text(step.key),  # a Text, not markup: `test[python=3.12]` is a step's key
            status_text(step.status),
            str(step.attempts) if step.attempts else "-",
            step_duration(step),
            _detail(step, tails, outputs),
        )
    return table


def _detail(
    step: StepRecord, tails: dict[str, list[LogRecord]] | None, outputs: bool
) -> RenderableType:
    parts: list[RenderableType] = []
    if step.last_error and step.status in ("failed", "cancelled", "skipped", "queued"):
        parts.append(Text(step.last_error, style="red" if step.status == "failed" else "yellow"))
    if tails and step.key in tails:
        parts.extend(Text(line.text, style="dim") for line in tails[step.key])
    if outputs and step.outputs:
        shown = {k: v for k, v in step.outputs.items() if k != "stdout"}
        if shown:
            parts.append(Text(json.dumps(shown, default=str)[:300], style="cyan"))
    return Group(*parts) if parts else Text("")


def run_header(run: RunRecord) -> Text:
    """One line naming the run and how it stands."""
    text = Text.assemble(
        ("run ", "bold"),
        (run.id, "bold"),
        "  ",
        (run.pipeline, "bold cyan"),
        "  ",
    )
    text.append_text(status_text(run.status))
    text.append(f"  {run_duration(run)}")
    return text


def event_line(event: EventRecord) -> Text:
    """One event of the log, for ``show`` and non-interactive progress."""
    text = Text(f"{event.seq:>4} {when(event.created_at)} ", style="dim")
    status = event.type.split(".", 1)[-1]
    text.append(event.type, style=STYLE.get(status, ""))
    if event.step_key:
        text.append(f" {event.step_key}", style="bold")
    detail = {k: v for k, v in event.payload.items() if v is not None}
    if detail:
        text.append(" " + json.dumps(detail, default=str)[:400], style="dim")
    return text
