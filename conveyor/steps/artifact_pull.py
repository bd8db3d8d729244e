"""``step.artifact_pull``: fetch an artifact of this or an earlier run, or a URL."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.orchestrator.contracts import SandboxConfig, StepContext
from conveyor.orchestrator.errors import StepFailed

from .artifact_files import place, pull
from .url_fetch import download


class ArtifactPullConfig(BaseModel):
    """The seed's keys for ``step.artifact_pull``."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["previous_execution", "url"] = Field(
        description="previous_execution: an artifact of a run (this one, a given one, or "
        "the latest successful run of this pipeline); url: an http(s) download."
    )
    dest: str = Field(description="Where to put it in the workspace.")
    key: str | None = Field(default=None, description="Artifact key (previous_execution).")
    execution_id: str | None = Field(
        default=None,
        description="Run to pull from; empty: the latest successful run of this pipeline.",
    )
    url: str | None = Field(default=None, description="URL to download (url).")
    image: str | None = Field(default=None, description="Write through a container of this image.")

    @model_validator(mode="after")
    def _needs(self) -> ArtifactPullConfig:
        if self.source == "previous_execution" and not self.key:
            raise ValueError("source previous_execution needs a key")
        if self.source == "url" and not self.url:
            raise ValueError("source url needs a url")
        return self


class ArtifactPull:
    """Puts an artifact (a run's, or a URL's content) into the workspace."""

    Config: type[BaseModel] = ArtifactPullConfig
    queue = "control"
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: ArtifactPullConfig) -> dict[str, Any]:
        """Fetch and place; outputs source, key, dest, size, bytes_written."""
        sandbox = ctx.sandbox(SandboxConfig(image=config.image))
        try:
            if config.source == "url":
                return self._url(ctx, sandbox, config)
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
        settings = ctx.settings
        with tempfile.TemporaryDirectory(prefix="conveyor-url-") as tmp:
            local = Path(tmp) / "download"
            size = download(
                config.url,
                local,
                allow_private=settings.allow_private_urls,
                limit=settings.max_download_bytes,
            )
            place(sandbox, local, config.dest, directory=False)
        ctx.log.line(f"downloaded {ctx.mask(config.url)} to {config.dest} ({size} bytes)")
        return {
            "source": "url",
            "key": config.key,
            "dest": config.dest,
            "size": size,
            "bytes_written": size,
        }
