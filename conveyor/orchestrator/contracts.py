"""The seams of Conveyor: Protocols that plugins implement and the runtime calls.

Step types, sandboxes, artifact stores, cloud providers and dispatchers live outside
the orchestrator package; they meet it only through these shapes. The execution store
is one too (``Store``, ``RunTransaction``): SQL implements it, and so does the in-memory
twin in ``conveyor.orchestrator.testing``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.artifacts.models import Artifact

from .durations import Duration
from .scanning.history import FindingsLedger
from .settings import Settings
from .status import RunStatus, StepStatus
from .store.records import EventRecord, LogRecord, RunRecord, StepRecord

if TYPE_CHECKING:  # these modules import this one, or SQLAlchemy
    from .store.sql import NewRun
    from .store.transitions import Dispatch, ExitCode, Move

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


@runtime_checkable
class UrlSource(Protocol):
    """URLs to download (the ``http`` provider): what ``step.artifact_pull`` fetches.

    The network policy is the operator's (``allow_private_urls``); a step names only the
    URL and the size it may take.
    """

    def fetch(self, url: str, dest: Path, *, limit: int) -> int:
        """Stream the http(s) ``url`` to ``dest``, at most ``limit`` bytes; the bytes written.

        StepFailed with a one-line reason otherwise: another scheme, an address inside
        the network (or a redirect to one), too large, an HTTP error, unreachable.
        """
        ...


#: Log lines as they are written: (stream, text) each.
LogLines = Sequence[tuple[str, str]]


class RunTransaction(Protocol):
    """One run, locked, being changed: what ``Store.transaction`` yields.

    Every writer of a run serialises on its lock. ``move_run``, ``move_step`` and
    ``move_steps`` are the one transition function: they refuse illegal moves, record an
    event per move, and move a step only while it is still in the status and attempt
    the caller read (attempt fencing). Events are numbered after the run's last one when
    the transaction commits; nothing it wrote stays when its body raises.

    The named transitions (``claim`` to ``reset``) are built once on those primitives,
    in ``conveyor.orchestrator.store.transitions.Transitions``, which every
    implementation inherits; the steps they queue wait in ``sends`` for the commit.
    """

    run: RunRecord
    now: datetime
    sends: list[Dispatch]

    def steps(self, keys: Collection[str] | None = None) -> list[StepRecord]:
        """The run's steps (or those in ``keys``) in plan order, without their outputs."""
        ...

    def queued_now(self, queue: str, types: Sequence[str], limit: int) -> list[StepRecord]:
        """Up to ``limit`` of the run's steps of ``types`` queued and due on ``queue``."""
        ...

    def status_counts(self) -> Counter[StepStatus]:
        """How many of the run's steps are in each status."""
        ...

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        ...

    def read_ahead(self, keys: Collection[str]) -> None:
        """Read these steps at once, for the ``step`` calls that follow."""
        ...

    def step(self, key: str) -> StepRecord:
        """One step of the run by key, with everything it holds (NotFound if none)."""
        ...

    def move_run(self, new: RunStatus, *, error: str | None = None, **payload: Any) -> None:
        """Change the run's status (checked), recording ``run.<status>``."""
        ...

    def move_step(
        self,
        step: StepRecord,
        new: StepStatus,
        *,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a step still as ``step`` describes it; False when another writer came first."""
        ...

    def move_steps(self, moves: Sequence[Move], new: StepStatus) -> None:
        """Move several steps, every one still as read, or raise StepsMoved."""
        ...

    def update_run(self, **fields: Any) -> None:
        """Change the run's fields (never its status: see ``move_run``)."""
        ...

    def update_step(self, step: StepRecord, **fields: Any) -> None:
        """Change a step's fields without changing its status."""
        ...

    def append_logs(self, batches: Sequence[tuple[str, int, LogLines]]) -> None:
        """Write steps' last log lines, (key, attempt, lines) each, with their results."""
        ...

    def event(self, type_: str, step_key: str | None = None, **payload: Any) -> None:
        """Append an event; it is numbered and written when the transaction commits."""
        ...

    def flush_events(self) -> None:
        """Number the pending events after the run's last one and write them now."""
        ...

    def queue(self, steps: Sequence[StepRecord]) -> list[StepRef]:
        """Queue pending steps for their next attempt, now."""
        ...

    def claim(self, step: StepRecord, owner: str, length: timedelta) -> StepRecord | None:
        """Take a queued step for ``owner``; None when another writer moved it first."""
        ...

    def claim_all(
        self, steps: Sequence[StepRecord], owner: str, length: timedelta
    ) -> list[StepRecord]:
        """Take these queued steps for ``owner``; all or nothing."""
        ...

    def redispatch(self, step: StepRecord) -> StepRef:
        """Send a queued step again; its status stays."""
        ...

    def succeed(self, done: Sequence[tuple[StepRecord, Mapping[str, Any]]]) -> None:
        """Record running steps' successes with their outputs."""
        ...

    def fail(
        self,
        step: StepRecord,
        error: str,
        *,
        exit_code: ExitCode = ...,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Fail a step: an attempt that ended badly, or a step that cannot run."""
        ...

    def retry(
        self,
        step: StepRecord,
        error: str,
        *,
        delay: float,
        exit_code: int | None = None,
        event: dict[str, Any] | None = None,
    ) -> StepRef:
        """Queue a failed attempt's step again, ``delay`` seconds from now."""
        ...

    def requeue(self, step: StepRecord, reason: str) -> StepRef:
        """Queue again, now, a running step whose worker is gone."""
        ...

    def cancel(
        self,
        step: StepRecord,
        reason: str,
        *,
        exit_code: ExitCode = ...,
        event: dict[str, Any] | None = None,
    ) -> None:
        """Cancel a step, whether it waited, was queued or was running."""
        ...

    def skip(self, step: StepRecord, reason: str) -> None:
        """Skip a pending step whose condition says so."""
        ...

    def reset(self, step: StepRecord, reason: str) -> None:
        """Make an ended step pending again, for a retried run."""
        ...


@runtime_checkable
class Store(Protocol):
    """The execution store: runs, their steps, events and logs (SQL, or the twin).

    Writes to a run happen in ``transaction``; the rest are reads for the engine, the
    API and the reconciler, and the two writes that need no run lock (log lines,
    leases).
    """

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite database."""
        ...

    def ensure_current(self) -> None:
        """Raise SchemaOutdated unless the store is ready for this code."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...

    def transaction(
        self, run_id: str, step_key: str | None = None, claim_attempt: int | None = None
    ) -> AbstractContextManager[RunTransaction]:
        """Lock a run and change it; events are numbered and written on commit.

        ``step_key`` names the step the work reads first. With ``claim_attempt``, only
        while that step is queued at that attempt: NothingToClaim otherwise, raised
        before anything was locked. NotFound when there is no such run.
        """
        ...

    def create_run(self, new: NewRun) -> RunRecord:
        """Write the definition version, the run, its steps and first event at once.

        A run with the idempotency key of an earlier one is that run.
        """
        ...

    def run_by_idempotency_key(self, key: str) -> RunRecord | None:
        """The run created with this idempotency key, if any."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """One run by its full id."""
        ...

    def find_run(self, ref: str) -> RunRecord:
        """One run by its id or a unique prefix of it (at least 4 characters)."""
        ...

    def list_runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        pipeline: str | None = None,
        before: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        """Newest runs first, filtered; ``after`` is the (created_at, id) a page ended at."""
        ...

    def get_plan(self, run_id: str) -> dict[str, Any]:
        """The compiled plan a run executes (JSON)."""
        ...

    def latest_run_id(
        self, pipeline: str, status: str, *, before: datetime | None = None
    ) -> str | None:
        """The newest run of ``pipeline`` in ``status`` (created before ``before``)."""
        ...

    def sealed_secrets(self, run_id: str) -> str | None:
        """The run's secrets as the Vault sealed them, or None when it was given none."""
        ...

    def step_outputs(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Outputs of the run's succeeded steps, by key."""
        ...

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The steps of a run in plan order."""
        ...

    def get_step(self, run_id: str, step_key: str) -> StepRecord:
        """One step of a run by key."""
        ...

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """Events of a run with a sequence number above ``after``."""
        ...

    def last_event(
        self, run_id: str, type_: str, *, since: datetime | None = None
    ) -> EventRecord | None:
        """The run's newest event of one type (written at or after ``since``), if any."""
        ...

    def findings_ledger(self, run_id: str, step_key: str, pipeline: str) -> FindingsLedger:
        """Where one step of one run records its scan findings (``ctx.findings``)."""
        ...

    def list_logs(
        self,
        run_id: str,
        step_key: str | None = None,
        *,
        after_id: int = 0,
        attempt: int | None = None,
        limit: int = 100_000,
    ) -> list[LogRecord]:
        """Log lines of a run (or one step) in the order they were written."""
        ...

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last ``lines`` lines of a step's log (of one attempt), oldest first."""
        ...

    def overdue_runs(self, now: datetime, limit: int = 500) -> list[str]:
        """Runs still going whose deadline has passed."""
        ...

    def expired_leases(self, now: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of running steps whose worker stopped renewing its lease."""
        ...

    def stale_queued(self, before: datetime, limit: int = 500) -> list[tuple[str, str]]:
        """(run, step) of steps queued (and due) since before ``before``."""
        ...

    def append_logs(self, run_id: str, step_key: str, attempt: int, lines: LogLines) -> None:
        """Append (stream, text) lines to a step's log, outside any run transaction."""
        ...

    def renew_leases(self, step_ids: Sequence[str], owner: str, until: datetime) -> dict[str, str]:
        """Extend the leases of running steps this owner holds; the status of each step.

        A step whose run was cancelled reads ``cancelled``: its worker should stop.
        """
        ...
