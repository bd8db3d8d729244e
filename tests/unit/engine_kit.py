"""Helpers for the embedded-engine tests: pipelines, runs, polling and a test step type."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import SandboxConfig, StepContext, StepType
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.plugins import StepTypes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import EventRecord, RunRecord

T = TypeVar("T")

Action = Literal[
    "raise",
    "non_json",
    "not_mapping",
    "huge",
    "nul_output",
    "deep_output",
    "ignore_cancel",
    "cooperative",
    "leak_secret",
    "read_steps",
    "chatty",
]


class ProbeConfig(BaseModel):
    """What the probe does."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Field(description="What to do.")
    seconds: float = Field(default=0.0, description="How long to work.")
    size: int = Field(default=0, description="Size of the huge output, or lines to log.")


class Probe:
    """A step type for what the built-in ones cannot do: misbehave in chosen ways."""

    Config: type[BaseModel] = ProbeConfig
    queue = "control"
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: ProbeConfig) -> Mapping[str, Any]:
        """Misbehave as ``config.action`` says."""
        if config.action == "raise":
            raise ValueError("the probe broke on purpose")
        if config.action == "non_json":
            return {"ok": "yes", "when": {1, 2, 3}}
        if config.action == "not_mapping":
            return ["a", "list"]  # type: ignore[return-value]
        if config.action == "read_steps":
            return {"seen": {key: dict(outputs) for key, outputs in ctx.steps.items()}}
        if config.action == "chatty":
            return _chatter(ctx, config.size)
        if config.action == "huge":
            return {"blob": "x" * config.size}
        if config.action == "nul_output":
            return {"text": "a\x00b"}
        if config.action == "deep_output":
            deep: dict[str, Any] = {}
            for _ in range(config.size):
                deep = {"a": deep}
            return {"deep": deep}
        if config.action == "leak_secret":
            token = ctx.secrets["TOKEN"]
            ctx.log.line(f"the token is {token}")
            raise ValueError(f"refused token {token}")
        if config.action == "ignore_cancel":
            ctx.log.line("working, deaf to cancellation")
            time.sleep(config.seconds)
            box = ctx.sandbox(SandboxConfig())  # and then it touches the workspace
            try:
                box.exec("touch deaf-was-here")
            finally:
                box.close()
            return {"finished": "yes"}
        return _cooperate(ctx, config.seconds)


def _chatter(ctx: StepContext, lines: int) -> Mapping[str, Any]:
    for number in range(lines):
        ctx.log.line(f"line {number}")
        if number % 50 == 0:
            time.sleep(0.002)  # let the monitor flush in between
    return {"lines": lines}


def _cooperate(ctx: StepContext, seconds: float) -> Mapping[str, Any]:
    ctx.log.line("working, watching ctx.cancelled")
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if ctx.cancelled:
            ctx.log.line("noticed the cancellation")
            return {"stopped": "early"}
        time.sleep(0.02)
    return {"stopped": "never"}


def step_types() -> dict[str, StepType]:
    """The installed step types plus ``test.probe``."""
    return {**StepTypes(), "test.probe": Probe()}


@contextmanager
def open_engine(settings: Settings) -> Iterator[EmbeddedEngine]:
    """An embedded engine on ``settings`` with the probe installed; closed afterwards."""
    engine = EmbeddedEngine(settings, step_types=step_types())
    try:
        yield engine
    finally:
        engine.close()


def pipeline(steps: str, header: str = "") -> str:
    """A one-pipeline file: ``header`` lines (timeout, env) then the ``steps`` list."""
    head = textwrap.indent(textwrap.dedent(header).strip("\n"), "    ")
    body = textwrap.indent(textwrap.dedent(steps).strip("\n"), "      ")
    return "pipelines:\n  p:\n" + (head + "\n" if head else "") + "    steps:\n" + body + "\n"


def start(
    engine: EmbeddedEngine,
    text: str,
    params: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> str:
    """Compile and start a run; return its id at once."""
    compiled = engine.compile(text)
    return engine.start(compiled.select(None), compiled.source, params, secrets=secrets).id


def finish(engine: EmbeddedEngine, run_id: str, timeout: float = 20.0) -> RunRecord:
    """Wait for the run to end; fail the test if it does not."""
    run = engine.wait(run_id, timeout=timeout, poll=0.05)
    assert run.status.terminal, f"run still {run.status} after {timeout}s"
    return run


def run(
    engine: EmbeddedEngine,
    text: str,
    params: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> RunRecord:
    """Start a run and wait for its end."""
    return finish(engine, start(engine, text, params, secrets))


def eventually(check: Callable[[], T | None], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.02)


def statuses(engine: EmbeddedEngine, run_id: str) -> dict[str, str]:
    """Step statuses by key."""
    return {s.key: s.status.value for s in engine.store.list_steps(run_id)}


def step(engine: EmbeddedEngine, run_id: str, key: str) -> Any:
    """One step record."""
    return next(s for s in engine.store.list_steps(run_id) if s.key == key)


def log_text(engine: EmbeddedEngine, run_id: str, key: str | None = None) -> list[str]:
    """The log lines of a step (or the whole run)."""
    return [line.text for line in engine.store.list_logs(run_id, key)]


def step_events(engine: EmbeddedEngine, run_id: str, key: str) -> list[EventRecord]:
    """The events of one step, in order."""
    return [e for e in engine.store.list_events(run_id) if e.step_key == key]


def alive(pid: int) -> bool:
    """True while a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
