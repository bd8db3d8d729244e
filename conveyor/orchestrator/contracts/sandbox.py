"""Where commands run: a ``Sandbox``, the ``SandboxFactory`` that opens one for a step,
and the shapes they trade (``SandboxConfig``, ``SandboxRequest``, ``ExecResult``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.durations import Duration

#: Takes one line of output, without its newline.
LineSink = Callable[[str], None]
#: Takes a block of output: one or more whole lines, each ended by a newline.
OutputSink = Callable[[str], None]


class SandboxConfig(BaseModel):
    """Where and how commands run: the seed's sandbox keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str | None = Field(default=None, description="Container image; none runs locally.")
    work_dir: str | None = Field(default=None, description="Working directory of commands.")
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[dict[str, Any]] = Field(default_factory=list)
    memory_limit: str | int | None = None
    cpu_limit: float | None = None
    network_mode: str | None = None
    timeout: Duration | None = Field(default=None, description="Limit for the whole step.")

    @classmethod
    def of(cls, config: object) -> SandboxConfig:
        """The sandbox keys of a step's config: any object with these attributes."""
        return cls(**{name: getattr(config, name) for name in cls.model_fields})


@dataclass(frozen=True)
class ExecResult:
    """What one command in a sandbox did."""

    exit_code: int
    duration: float
    tail: list[str] = field(default_factory=list)


@runtime_checkable
class Sandbox(Protocol):
    """A place to run commands, with a workspace that lives for the whole run.

    The workspace holds a ``.conveyor/outputs`` directory from the moment the sandbox
    opens: steps write their outputs files there without preparing anything.
    """

    #: The workspace path as commands inside the sandbox see it.
    workspace: str

    def exec(
        self,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        on_line: LineSink | None = None,
        on_output: OutputSink | None = None,
    ) -> ExecResult:
        """Run a shell script; stream its output to ``on_output`` in blocks of whole
        lines (the fast way: a loud command costs a call per block, not per line), or
        else each line to ``on_line``."""
        ...

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host file or directory into the sandbox."""
        ...

    def copy_out(self, src: str, dest: Path) -> None:
        """Copy a file or directory out of the sandbox to the host."""
        ...

    def close(self) -> None:
        """Release what the sandbox holds; safe to call twice."""
        ...


@dataclass(frozen=True)
class SandboxRequest:
    """Everything a sandbox factory needs to open one sandbox for one step."""

    run_id: str
    step_key: str
    config: SandboxConfig
    cancel: threading.Event
    deadline: float | None  # time.monotonic() value, or None for no limit


class SandboxFactory(Protocol):
    """Opens sandboxes of one kind (``local``, ``docker``); built with the settings."""

    def open(self, request: SandboxRequest) -> Sandbox:
        """Open a sandbox for one step of one run."""
        ...

    def cleanup_run(self, run_id: str) -> None:
        """Remove the run's workspace once the run is over; safe to call twice."""
        ...
