"""The seams of Conveyor: Protocols that plugins implement and the runtime calls.

Step types, sandboxes, artifact stores, cloud providers and dispatchers live outside
the orchestrator package; they meet it only through these shapes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.artifacts.models import Artifact

from .durations import Duration
from .scanning.history import FindingsLedger
from .settings import Settings

LineSink = Callable[[str], None]


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
    ) -> ExecResult:
        """Run a shell script; stream each output line to ``on_line``."""
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


class StepLogger(Protocol):
    """Streams a step's log lines to the store, masking secrets first."""

    def line(self, text: str, stream: str = "stdout") -> None:
        """Record one line."""
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


class Dispatcher(Protocol):
    """Sends ready steps to whatever executes them (threads here, Celery later)."""

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Ask for ``ref`` to be executed, not before ``eta`` when given."""
        ...


class ArtifactStore(Protocol):
    """Files kept per run (local disk, S3): streamed, checksummed, all-or-nothing."""

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        """Store the file ``src`` under ``key``; a half-written upload is never visible."""
        ...

    def get(self, run_id: str, key: str, dest: Path) -> Artifact:
        """Write the artifact to ``dest``; a checksum mismatch is an error, not a file."""
        ...

    def open(self, run_id: str, key: str) -> tuple[Artifact, BinaryIO]:
        """The artifact and a stream of its content (for serving it)."""
        ...

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of a run, by key."""
        ...

    def delete(self, run_id: str, key: str) -> None:
        """Remove one artifact."""
        ...

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of a run; how many there were."""
        ...


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; the password never reaches a log or a repr."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BuildSpec:
    """One image build: a context directory on this host and the Dockerfile in it."""

    context: Path
    dockerfile: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()
    target: str | None = None
    pull: bool = False


@dataclass(frozen=True)
class BuiltImage:
    """What a build made: ``digest`` is the repo digest when there is one, else the id."""

    image_id: str
    digest: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ContainerResult:
    """How a container ended: ``exit_code`` is None when it was not waited for."""

    container_id: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    #: The streams (``stdout``, ``stderr``) that were longer than the cap and cut.
    cut: tuple[str, ...] = ()


@runtime_checkable
class ImageEngine(Protocol):
    """Builds, tags, pushes and runs images (provider ``docker``, via ``ctx.provider``).

    Every method streams progress lines to its sink, stops at ``deadline`` (a
    ``time.monotonic()`` value) or once ``cancel`` is set, and fails with one-line
    ``StepFailed`` messages.
    """

    def build(
        self,
        spec: BuildSpec,
        *,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> BuiltImage:
        """Build ``spec`` and apply its tags."""
        ...

    def tag(self, image: str, reference: str) -> None:
        """Give the local image ``image`` the name ``reference`` too."""
        ...

    def push(
        self,
        reference: str,
        *,
        auth: RegistryAuth | None,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> str:
        """Push ``reference`` (the engine's own credentials without ``auth``); its digest."""
        ...

    def run(
        self,
        request: SandboxRequest,
        *,
        command: Sequence[str] | None,
        workspace: Path | None,
        wait: bool = True,
        on_stdout: LineSink | None = None,
        on_stderr: LineSink | None = None,
    ) -> ContainerResult:
        """Run ``request.config.image`` (its own command without ``command``), then remove it.

        ``workspace`` (the run's directory on this host) is mounted at ``/workspace``.
        """
        ...


@runtime_checkable
class ObjectSource(Protocol):
    """Objects in a bucket (the ``s3`` provider): what ``step.artifact_pull`` fetches.

    Region, endpoint and credentials are the operator's; a step names only the object.
    """

    def fetch(self, bucket: str, key: str, dest: Path, *, limit: int) -> Artifact:
        """Stream the object to ``dest``: all of it or nothing, at most ``limit`` bytes.

        Returns its size and SHA-256; ArtifactNotFound (no bucket, no object) or
        ArtifactError (denied, too large, unreachable) with a one-line reason otherwise.
        """
        ...
