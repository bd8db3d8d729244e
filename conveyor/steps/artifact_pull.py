"""``step.artifact_pull``: fetch an artifact of this or an earlier run, a URL, or an S3 object."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.orchestrator.contracts import ObjectSource, SandboxConfig, StepContext, UrlSource
from conveyor.orchestrator.errors import ArtifactError, StepFailed
from conveyor.orchestrator.queues import CONTROL

from .artifact_files import place, pull


class ArtifactPullConfig(BaseModel):
    """The seed's keys for ``step.artifact_pull``."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["previous_execution", "url", "s3"] = Field(
        description="previous_execution: an artifact of a run (this one, a given one, or "
        "the latest successful run of this pipeline); url: an http(s) download; s3: an "
        "object of a bucket."
    )
    dest: str = Field(description="Where to put it in the workspace.")
    key: str | None = Field(
        default=None, description="Artifact key (previous_execution) or object key (s3)."
    )
    execution_id: str | None = Field(
        default=None,
        description="Run to pull from; empty: the latest successful run of this pipeline.",
    )
    url: str | None = Field(default=None, description="URL to download (url).")
    bucket: str | None = Field(
        default=None, description="Bucket of the object (s3); default: CONVEYOR_S3_BUCKET."
    )
    image: str | None = Field(default=None, description="Write through a container of this image.")

    @model_validator(mode="after")
    def _needs(self) -> ArtifactPullConfig:
        if self.source in ("previous_execution", "s3") and not self.key:
            raise ValueError(f"source {self.source} needs a key")
        if self.source == "url" and not self.url:
            raise ValueError("source url needs a url")
        if self.bucket is not None and self.source != "s3":
            raise ValueError("bucket is for source s3")
        return self


class ArtifactPull:
    """Puts an artifact (a run's, or a URL's content) into the workspace."""

    Config: type[BaseModel] = ArtifactPullConfig
    queue = CONTROL
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: ArtifactPullConfig) -> dict[str, Any]:
        """Fetch and place; outputs source, key, dest, size, bytes_written."""
        sandbox = ctx.sandbox(SandboxConfig(image=config.image))
        try:
            if config.source == "url":
                return self._url(ctx, sandbox, config)
            if config.source == "s3":
                return self._s3(ctx, sandbox, config)
            return self._artifact(ctx, sandbox, config)
        finally:
            sandbox.close()

    def _artifact(
        self, ctx: StepContext, sandbox: Any, config: ArtifactPullConfig
    ) -> dict[str, Any]:
        assert config.key is not None
        run_id = config.execution_id or ctx.previous_run()
        if not run_id:
            raise StepFailed(
                f"no earlier successful run of {ctx.pipeline} to pull {config.key} from"
            )
        artifact = pull(ctx, sandbox, run_id, config.key, config.dest)
        ctx.log.line(
            f"pulled {config.key} of run {run_id} to {config.dest} ({artifact.size} bytes)"
        )
        return {
            "source": config.source,
            "key": config.key,
            "execution_id": run_id,
            "dest": config.dest,
            "size": artifact.size,
            "bytes_written": artifact.size,
            "checksum": artifact.checksum,
        }

    def _url(self, ctx: StepContext, sandbox: Any, config: ArtifactPullConfig) -> dict[str, Any]:
        assert config.url is not None
        # The provider applies the operator's network policy (allow_private_urls).
        web: UrlSource = ctx.provider("http")
        with tempfile.TemporaryDirectory(prefix="conveyor-url-") as tmp:
            local = Path(tmp) / "download"
            size = web.fetch(config.url, local, limit=ctx.settings.max_download_bytes)
            place(sandbox, local, config.dest, directory=False)
        ctx.log.line(f"downloaded {ctx.mask(config.url)} to {config.dest} ({size} bytes)")
        return {
            "source": "url",
            "key": config.key,
            "dest": config.dest,
            "size": size,
            "bytes_written": size,
        }

    def _s3(self, ctx: StepContext, sandbox: Any, config: ArtifactPullConfig) -> dict[str, Any]:
        assert config.key is not None
        bucket = config.bucket or ctx.settings.s3_bucket
        if not bucket:
            raise StepFailed("source s3 needs a bucket (or the operator's CONVEYOR_S3_BUCKET)")
        objects: ObjectSource = ctx.provider("s3")
        with tempfile.TemporaryDirectory(prefix="conveyor-s3-") as tmp:
            local = Path(tmp) / "object"
            try:
                found = objects.fetch(
                    bucket, config.key, local, limit=ctx.settings.max_download_bytes
                )
            except ArtifactError as exc:
                raise StepFailed(exc.message) from None
            place(sandbox, local, config.dest, directory=False)
        ctx.log.line(f"fetched s3://{bucket}/{config.key} to {config.dest} ({found.size} bytes)")
        return {
            "source": "s3",
            "bucket": bucket,
            "key": config.key,
            "dest": config.dest,
            "size": found.size,
            "bytes_written": found.size,
            "checksum": found.checksum,
        }
