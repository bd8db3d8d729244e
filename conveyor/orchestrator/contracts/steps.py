"""Steps and their dispatch: the ``StepType`` plugins implement, the ``StepContext`` it
runs with (and its ``StepLogger``), and the ``Dispatcher`` that sends a ``StepRef``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts.artifacts import ArtifactStore
    from conveyor.orchestrator.contracts.sandbox import Sandbox, SandboxConfig
    from conveyor.orchestrator.scanning.history import FindingsLedger
    from conveyor.orchestrator.settings import Settings


class StepLogger(Protocol):
    """Streams a step's log lines to the store, masking secrets first."""

    def line(self, text: str, stream: str = "stdout") -> None:
        """Record one line."""
        ...

    def write(self, block: str, stream: str = "stdout") -> None:
        """Record a block of whole lines, each ended by a newline (the last one may not be)."""
        ...

    def flush(self) -> None:
        """Write what is buffered."""
        ...


class StepContext(Protocol):
    """What a step type sees while it runs."""

    run_id: str
    step_key: str
    attempt: int
    pipeline: str
    params: Mapping[str, Any]
    steps: Mapping[str, Mapping[str, Any]]
    env: Mapping[str, str]
    secrets: Mapping[str, str]
    matrix: Mapping[str, Any]
    cancel: threading.Event
    deadline: float | None

    @property
    def log(self) -> StepLogger:
        """Where the step's log lines go."""
        ...

    @property
    def settings(self) -> Settings:
        """The operator's settings (policies such as allow_private_urls)."""
        ...

    @property
    def artifacts(self) -> ArtifactStore:
        """The artifact store (PluginError when none is configured)."""
        ...

    def previous_run(self) -> str | None:
        """The id of the latest earlier run of this pipeline that succeeded, if any."""
        ...

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_key``: the key for effects outside Conveyor."""
        ...

    @property
    def cancelled(self) -> bool:
        """True once the run or step has been cancelled or timed out."""
        ...

    def remaining(self) -> float | None:
        """Seconds left before the step's timeout, or None."""
        ...

    def sandbox(self, config: SandboxConfig) -> Sandbox:
        """Open a sandbox (docker when ``config.image`` is set, local otherwise)."""
        ...

    def mask(self, text: str) -> str:
        """Replace secret values in ``text`` with ``***``."""
        ...

    def provider(self, name: str) -> Any:
        """The provider registered as ``name`` in ``conveyor.providers`` (PluginError if none)."""
        ...

    @property
    def findings(self) -> FindingsLedger:
        """Where scan steps record findings and find their baseline run."""
        ...


@runtime_checkable
class StepType(Protocol):
    """A kind of step. Registered under entry-point group ``conveyor.steps``.

    ``Config`` is a pydantic model with ``extra="forbid"``; ``run`` returns the outputs
    later steps see under ``steps.<name>``. Raise ``StepFailed`` to fail with a reason.

    A type may also say ``brief = True``: it runs in the worker's own process, reaches
    nothing outside it and ends within milliseconds (``step.set``, ``step.log``). The
    brief steps of a run are then coalesced, a worker taking several with one message
    and recording them in one transaction; any other step gets a message of its own.
    """

    Config: type[BaseModel]
    queue: str
    #: Config fields whose templates reach a shell: values go through env vars instead.
    shell_fields: frozenset[str]

    def run(self, ctx: StepContext, config: Any) -> Mapping[str, Any]:
        """Do the step's work and return its outputs."""
        ...


@dataclass(frozen=True)
class StepRef:
    """What a dispatch carries: ids only, never YAML."""

    run_id: str
    step_key: str
    attempt: int
    queue: str
    #: Send it to any worker of ``queue``, never to the host holding the run's workspace:
    #: a re-send of a message that may be lost there (its host may be gone).
    anywhere: bool = False


class Dispatcher(Protocol):
    """Sends ready steps to whatever executes them (threads here, Celery later)."""

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Ask for ``ref`` to be executed, not before ``eta`` when given."""
        ...
