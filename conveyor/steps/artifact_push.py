"""``step.artifact_push``: store a file or directory of the workspace as an artifact."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import SandboxConfig, StepContext
from conveyor.orchestrator.queues import CONTROL

from .artifact_files import push


class ArtifactPushConfig(BaseModel):
    """The seed's keys for ``step.artifact_push``."""

    model_config = ConfigDict(extra="forbid")

    source_path: str = Field(description="File or directory in the workspace to store.")
    key: str = Field(description="Key the artifact is stored under, e.g. `server-binary`.")
    dest: str = Field(default="artifact_store", description="Where it goes (informational).")
    image: str | None = Field(
        default=None, description="Read it through a container of this image (Docker workspace)."
    )


class ArtifactPush:
    """Stores a workspace file or directory (as a tar) in the run's artifact store."""

    Config: type[BaseModel] = ArtifactPushConfig
    queue = CONTROL
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: ArtifactPushConfig) -> dict[str, Any]:
        """Copy the file out of the sandbox and store it; outputs key, size, checksum."""
        sandbox = ctx.sandbox(SandboxConfig(image=config.image))
        try:
            artifact = push(ctx, sandbox, config.source_path, config.key)
        finally:
            sandbox.close()
        ctx.log.line(f"stored {config.source_path} as {artifact.key} ({artifact.size} bytes)")
        return {
            "key": artifact.key,
            "size": artifact.size,
            "checksum": artifact.checksum,
            "kind": artifact.kind,
            "dest": config.dest,
        }
