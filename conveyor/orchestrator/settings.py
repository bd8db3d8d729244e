"""Conveyor's settings: one pydantic-settings object, built at entry points, passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
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
    lease_seconds: float = Field(default=30.0, gt=0, description="How long a claim lasts.")
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="How often leases renew.")
    max_definition_bytes: int = Field(default=1_048_576, ge=1024)
    max_steps: int = Field(default=1000, ge=1, description="Steps per pipeline after matrices.")
    max_matrix: int = Field(default=256, ge=1, description="Expansions of one matrix step.")
    max_yaml_nodes: int = Field(default=200_000, ge=100)
    max_template_output: int = Field(default=1_048_576, ge=1024)
    max_output_bytes: int = Field(default=1_048_576, ge=1024, description="Outputs of one step.")
    log_flush_seconds: float = Field(default=0.2, gt=0)
    reconcile_seconds: float = Field(
        default=10.0, gt=0, description="How often the reconciler looks for lost work."
    )
    stale_after_seconds: float = Field(
        default=30.0, gt=0, description="A queued step unclaimed this long is sent again."
    )
    artifact_store: str = Field(
        default="local", description="Where artifacts go: local (under data_dir) or s3."
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
    docker_allow_host_network: bool = Field(
        default=False, description="Let Docker sandboxes use network_mode host."
    )
    docker_allowed_mounts: list[str] = Field(
        default_factory=list, description="Host path prefixes Docker sandboxes may bind-mount."
    )

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
    def workspace_root(self) -> Path:
        """The parent directory of every run's workspace."""
        return self.data_dir / "workspaces"
