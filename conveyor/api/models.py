"""Request and response bodies of the API: pydantic models, the source of the OpenAPI schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store import EventRecord, LogRecord, Role, RunRecord, StepRecord, Token

MAX_PAGE = 200
#: The largest number an integer column holds (versions, event sequence numbers).
MAX_INT = 2**31 - 1
MAX_VERSION = MAX_INT


class Request(BaseModel):
    """A request body or query: unknown fields are errors, as in pipeline files."""

    model_config = ConfigDict(extra="forbid")


class Query(BaseModel):
    """Query parameters: unknown ones are ignored (a cache-busting ``_=`` must not fail)."""

    model_config = ConfigDict(extra="ignore")


# -- errors ------------------------------------------------------------------------------


class ProblemModel(BaseModel):
    """One thing wrong with a pipeline file."""

    path: str = Field(description="Where, e.g. `pipelines.ci.steps[0].config.commands`.")
    message: str
    line: int | None = Field(default=None, description="Line in the YAML, when known.")


class ErrorBody(BaseModel):
    """Every error the API answers: a machine name and a message for a person."""

    error: str = Field(description="Stable machine name, e.g. `not_found`, `spec_error`.")
    detail: str = Field(description="What went wrong, for a person.")
    problems: list[ProblemModel] | None = Field(
        default=None, description="Every problem of an invalid pipeline (422 only)."
    )


# -- pipelines ---------------------------------------------------------------------------


class RegisterPipeline(Request):
    """A pipeline file to register; a new version is made only when its text changed."""

    definition: str = Field(description="The pipeline file (YAML).", min_length=1)
    pipeline: str | None = Field(
        default=None, description="Which pipeline of the file; needed when it has several."
    )


class PipelineVersion(BaseModel):
    """One registered version of a pipeline."""

    name: str
    version: int
    id: str
    created_at: datetime
    created: bool = Field(description="True when this request made the version.")
    definition: str | None = Field(default=None, description="The YAML (single-version reads).")


class PipelineList(BaseModel):
    """Registered pipelines (their newest version) or the versions of one."""

    items: list[PipelineVersion]


# -- runs --------------------------------------------------------------------------------


class SubmitRun(Request):
    """Start a run of a registered pipeline, or of a pipeline file given inline.

    Sent as multipart/form-data, this is the `run` part, and a `source` part may bring
    the run's source: a gzipped tar unpacked into the run's workspace before its steps.
    """

    pipeline: str | None = Field(
        default=None, description="A registered pipeline, or which pipeline of `definition`."
    )
    version: int | None = Field(
        default=None,
        ge=1,
        le=MAX_VERSION,
        description="Version of the registered pipeline (default: newest).",
    )
    definition: str | None = Field(default=None, description="A pipeline file (YAML) to run.")
    params: dict[str, Any] = Field(default_factory=dict, description="Run parameters.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Secrets (`{{ .secrets.NAME }}`): sealed at rest, masked as *** in every "
        "log, output and error, never returned. Needs CONVEYOR_SECRET_KEY.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SubmitRun:
        if self.definition is None and self.pipeline is None:
            raise ValueError("give `pipeline` (a registered pipeline) or `definition` (YAML)")
        if self.definition is not None and self.version is not None:
            raise ValueError("`version` picks a registered pipeline: not with `definition`")
        return self


class RunQuery(Query):
    """Filters and page of ``GET /runs``."""

    status: RunStatus | None = None
    pipeline: str | None = None
    limit: int = Field(default=20, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(
        default=None,
        description="`next_cursor` of the page before: the page goes on after that page's "
        "last run (keyset), so runs created meanwhile neither repeat nor shift it, and a page "
        "deep in a long history costs what the first does.",
    )


class Step(BaseModel):
    """One step of a run."""

    key: str
    position: int
    type: str
    queue: str
    status: StepStatus
    attempts: int
    last_error: str | None
    exit_code: int | None
    outputs: dict[str, Any] | None
    started_at: datetime | None
    completed_at: datetime | None
    duration: float | None = Field(description="Seconds the latest attempt ran.")

    @classmethod
    def of(cls, step: StepRecord) -> Step:
        """The API's view of a step record."""
        return cls(
            key=step.key,
            position=step.position,
            type=step.type,
            queue=step.queue,
            status=step.status,
            attempts=step.attempts,
            last_error=step.last_error,
            exit_code=step.exit_code,
            outputs=step.outputs,
            started_at=step.started_at,
            completed_at=step.completed_at,
            duration=step.duration,
        )


class Run(BaseModel):
    """One run of a pipeline."""

    id: str
    pipeline: str
    definition_id: str
    status: RunStatus
    params: dict[str, Any]
    submitted_by: str | None
    error: str | None
    event_seq: int = Field(description="Sequence number of the run's latest event.")
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    duration: float | None

    @classmethod
    def of(cls, run: RunRecord) -> Run:
        """The API's view of a run record."""
        return cls(
            id=run.id,
            pipeline=run.pipeline,
            definition_id=run.definition_id,
            status=run.status,
            params=run.params,
            submitted_by=run.submitted_by,
            error=run.error,
            event_seq=run.event_seq,
            deadline=run.deadline,
            created_at=run.created_at,
            updated_at=run.updated_at,
            completed_at=run.completed_at,
            duration=run.duration,
        )


class RunDetail(Run):
    """A run with its steps, in plan order."""

    steps: list[Step]

    @classmethod
    def with_steps(cls, run: RunRecord, steps: list[StepRecord]) -> RunDetail:
        """A run and its steps."""
        return cls(**Run.of(run).model_dump(), steps=[Step.of(s) for s in steps])


class RunPage(BaseModel):
    """A page of runs, newest first (by creation time, then by id)."""

    items: list[Run]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")


class Event(BaseModel):
    """One entry of a run's append-only event log."""

    seq: int
    step_key: str | None
    type: str
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, event: EventRecord) -> Event:
        """The API's view of an event."""
        return cls(
            seq=event.seq,
            step_key=event.step_key,
            type=event.type,
            payload=event.payload,
            created_at=event.created_at,
        )


class EventQuery(Query):
    """Where to start reading a run's events."""

    after: int = Field(default=0, ge=0, le=MAX_INT, description="Only events with a larger `seq`.")
    follow: bool = Field(
        default=False, description="Stream events as server-sent events until the run ends."
    )


class EventList(BaseModel):
    """Events of a run in order; ask again with `after=last_seq` for newer ones."""

    items: list[Event]
    last_seq: int


#: Line ids are chunk ids shifted 16 bits: they stay below 2**53, exact in any JSON reader.
MAX_LINE_ID = 2**53 - 1
#: Text a page of a log carries by default, and at most.
LOG_PAGE_BYTES = 1024**2
MAX_LOG_PAGE_BYTES = 8 * 1024**2


class LogQuery(Query):
    """Which lines of a step's log, and how many at most in one answer."""

    attempt: int | None = Field(default=None, ge=1, description="Only this attempt.")
    after: int = Field(
        default=0, ge=0, le=MAX_LINE_ID, description="Only lines with a larger `id`."
    )
    tail: int | None = Field(default=None, ge=1, le=10_000, description="Only the last N lines.")
    limit: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="At most this many lines; when the log goes on, `more` is true.",
    )
    max_bytes: int = Field(
        default=LOG_PAGE_BYTES,
        ge=1024,
        le=MAX_LOG_PAGE_BYTES,
        description="At most about this many bytes of text (always at least one line); "
        "when the log goes on, `more` is true.",
    )
    follow: bool = Field(
        default=False, description="Stream lines as server-sent events until the step ends."
    )


class LogLine(BaseModel):
    """One line of a step's log."""

    id: int
    attempt: int
    stream: str
    text: str
    created_at: datetime

    @classmethod
    def of(cls, line: LogRecord) -> LogLine:
        """The API's view of a log line."""
        return cls(
            id=line.id,
            attempt=line.attempt,
            stream=line.stream,
            text=line.text,
            created_at=line.created_at,
        )


class LogList(BaseModel):
    """Lines of a step's log in order, and how the step stands."""

    items: list[LogLine]
    status: StepStatus
    last_id: int = Field(description="Pass as `after` to read only newer lines.")
    more: bool = Field(
        default=False,
        description="True when `limit` or `max_bytes` left lines for another page: ask again "
        "with `after=last_id`.",
    )


# -- tokens ------------------------------------------------------------------------------


class CreateToken(Request):
    """A new API token."""

    name: str = Field(min_length=1, max_length=100)
    role: Role


class TokenModel(BaseModel):
    """A token as stored: never its secret."""

    id: str
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: Token) -> TokenModel:
        """The API's view of a token."""
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


class NewToken(TokenModel):
    """A token just created, with its secret: shown this once, never again."""

    secret: str


class TokenList(BaseModel):
    """Every token, newest first."""

    items: list[TokenModel]


# -- system ------------------------------------------------------------------------------


class StepTypeModel(BaseModel):
    """An installed step type and the JSON Schema of its `config`."""

    name: str
    queue: str = Field(description="The queue its steps go to unless a step says otherwise.")
    description: str
    config_schema: dict[str, Any]


class StepTypeList(BaseModel):
    """Every installed step type."""

    items: list[StepTypeModel]


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"
    version: str


class Check(BaseModel):
    """One dependency of readiness."""

    ok: bool
    detail: str


class Readiness(BaseModel):
    """Whether this API can serve: its database and its broker answer."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]
    error: str | None = Field(default=None, description="`not_ready` when unavailable.")
    detail: str | None = Field(default=None, description="What is down, when unavailable.")


# -- artifacts ---------------------------------------------------------------------------


class ArtifactModel(BaseModel):
    """A stored file of a run."""

    key: str
    size: int = Field(description="Bytes.")
    checksum: str = Field(description="SHA-256, hex.")
    kind: str = Field(description="`file`, or `dir` for a directory stored as a tar.")
    created_at: datetime


class ArtifactList(BaseModel):
    """A run's artifacts, by key."""

    items: list[ArtifactModel]
