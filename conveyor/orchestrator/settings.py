"""Conveyor's settings: one pydantic-settings object, built at entry points, passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .durations import parse_duration

#: How a retention says "never delete" (in pipelines and in CONVEYOR_ARTIFACT_RETENTION).
FOREVER = ("", "forever", "never")


def parse_retention(value: Any) -> float | None:
    """Seconds of a retention (``30d``, ``12h``, ``3600``); None for ``forever``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in FOREVER):
        return None
    return parse_duration(value)


class Settings(BaseSettings):
    """Every knob of Conveyor, read from ``CONVEYOR_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".conveyor"),
        description="Where the embedded database, workspaces and artifacts live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to a SQLite file under data_dir.",
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker; without one, steps run in this process."
    )
    max_parallel: int = Field(default=4, ge=1, le=256, description="Inline dispatcher threads.")
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a claim lasts unless renewed: a worker that died is noticed "
        "this long after its last renewal (plus up to reconcile_seconds).",
    )
    heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often leases renew; at most half the lease (when not set: 5 s, "
        "or a third of a shorter lease).",
    )
    lease_margin_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Fencing by time: an attempt that could not renew its lease for "
        "lease_seconds minus this margin (at most a third of the lease) kills its processes "
        "and records nothing, before its step can be handed to another worker. Larger: "
        "more room for clock skew and a slow kill; smaller: more store outage survived.",
    )
    max_definition_bytes: int = Field(default=1_048_576, ge=1024)
    max_steps: int = Field(default=1000, ge=1, description="Steps per pipeline after matrices.")
    max_matrix: int = Field(default=256, ge=1, description="Expansions of one matrix step.")
    max_yaml_nodes: int = Field(default=200_000, ge=100)
    max_template_output: int = Field(default=1_048_576, ge=1024)
    template_max_operations: int = Field(
        default=1_000_000,
        ge=1000,
        description="Work one rendering may do (loop iterations, calls, filters, lookups); "
        "past it the template fails. A step's templates share one budget.",
    )
    template_max_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Time one rendering may take; a step's templates share it, and the "
        "step's own timeout stops them sooner.",
    )
    max_output_bytes: int = Field(default=1_048_576, ge=1024, description="Outputs of one step.")
    max_json_depth: int = Field(
        default=32,
        ge=2,
        le=200,
        description="Levels of objects and arrays a JSON request body may nest (its params "
        "included); a deeper body is refused with a 400 before anything is stored.",
    )
    max_params_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Size of a run's params as JSON, and of its secrets; more is a 400.",
    )
    log_flush_seconds: float = Field(default=0.2, gt=0)
    log_max_bytes: int = Field(
        default=16 * 1024**2,
        ge=1024,
        description="Log kept per step attempt; past it, lines are dropped and one marker "
        "line says how many bytes and lines were.",
    )
    reconcile_seconds: float = Field(
        default=10.0, gt=0, description="How often the reconciler looks for lost work."
    )
    stale_after_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A queued step unclaimed this long (or this long past its retry time) "
        "is sent again; a run with nothing queued or running this long is advanced again.",
    )
    workspace_shared: bool = Field(
        default=False,
        description="Workers see one workspace directory (a shared volume at data_dir or "
        "its workspaces/): a run's files are not handed between hosts through the "
        "artifact store. Off (default): each host keeps its own copy, synced per step.",
    )
    artifact_store: str = Field(
        default="local", description="Where artifacts go: local (under data_dir) or s3."
    )
    artifact_dir: Path | None = Field(
        default=None,
        description="The local artifact store's directory (default: data_dir/artifacts); "
        "a volume every host mounts shares artifacts and workspaces without S3.",
    )
    s3_bucket: str | None = Field(default=None, description="Bucket of the s3 artifact store.")
    s3_prefix: str = Field(default="conveyor", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(
        default=None, description="For MinIO, DigitalOcean Spaces and other S3 servers."
    )
    s3_region: str | None = None
    allow_private_urls: bool = Field(
        default=False,
        description="Let artifact pulls fetch from loopback, private and link-local addresses.",
    )
    max_download_bytes: int = Field(
        default=10 * 1024**3, ge=1, description="Largest file an artifact pull (URL, S3) fetches."
    )
    max_source_bytes: int = Field(
        default=100 * 1024**2,
        ge=1024,
        description="Largest source archive (`conveyor submit --source`, gzipped) the API "
        "takes; more is a 413.",
    )
    max_source_unpacked_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description="Bytes a run's source archive may unpack to in a workspace.",
    )
    max_source_files: int = Field(
        default=100_000, ge=1, description="Files, directories and links of a source archive."
    )
    artifact_retention: float | None = Field(
        default=None,
        description="How long finished runs keep their artifacts (30d, 12h) unless their "
        "pipeline says (`artifacts: {retention: ...}`); empty or `forever` keeps them.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Fernet key sealing runs' secrets at rest; needed when secrets cross hosts.",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8080", description="Where `conveyor submit` finds the API."
    )
    token: str | None = Field(default=None, description="Bearer token the CLI sends to the API.")
    task_events: bool = Field(
        default=True,
        description="Workers send Celery task events (what Flower shows): one task per step, "
        "brief steps and chained steps included. Off: less broker traffic, nothing to watch.",
    )
    docker_allow_host_network: bool = Field(
        default=False, description="Let Docker sandboxes use network_mode host."
    )
    docker_allowed_mounts: list[str] = Field(
        default_factory=list, description="Host path prefixes Docker sandboxes may bind-mount."
    )

    @model_validator(mode="after")
    def _renewed_in_time(self) -> Settings:
        """Leases renew at least twice per lease, or live workers would lose their steps."""
        if "heartbeat_seconds" not in self.model_fields_set:
            self.heartbeat_seconds = min(self.heartbeat_seconds, self.lease_seconds / 3)
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds:g}) must be at most half of "
                f"lease_seconds ({self.lease_seconds:g}): a lease renewed less often runs "
                "out under a live worker, and its step is run twice"
            )
        return self

    @field_validator("artifact_retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float | None:
        return parse_retention(value)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'conveyor.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        """The local artifact store's directory."""
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def workspace_root(self) -> Path:
        """The parent directory of every run's workspace."""
        return self.data_dir / "workspaces"
