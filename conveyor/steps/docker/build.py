"""``step.docker_build``: build an image from a directory of the run's workspace.

The context is a directory of the workspace (where ``conveyor run --source`` put the
code, or where an earlier step wrote it); the engine's builder gets it as a tar and
its progress streams to the step's log.
"""

from __future__ import annotations

import posixpath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import BuildSpec, StepContext
from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.queues import SANDBOX

from .common import image_engine, run_workspace, workspace_path


class DockerBuildConfig(BaseModel):
    """The seed's keys for ``step.docker_build``, plus ``target`` and ``pull``."""

    model_config = ConfigDict(extra="forbid")

    context: str = Field(
        description="Build context directory: relative to the run's workspace, or under "
        "/workspace (`.` is the whole workspace)."
    )
    dockerfile: str = Field(
        default="Dockerfile", description="Dockerfile path relative to the context."
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Names to give the image, e.g. `myapp:1.2.3`; without any the image "
        "is known by its id only.",
    )
    build_args: dict[str, str] = Field(
        default_factory=dict, description="Build arguments (ARG) and their values."
    )
    cache_from: list[str] = Field(
        default_factory=list, description="Images whose layers may serve as the build cache."
    )
    target: str | None = Field(default=None, description="Stage of a multi-stage build to stop at.")
    pull: bool = Field(
        default=False, description="Pull newer versions of the base images before building."
    )


class DockerBuild:
    """Builds a Docker image from a workspace directory and a Dockerfile."""

    Config: type[BaseModel] = DockerBuildConfig
    queue = SANDBOX
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: DockerBuildConfig) -> dict[str, Any]:
        """Build; outputs ``image_id``, ``digest``, ``tags``, ``image`` and ``context``."""
        engine = image_engine(ctx)
        with run_workspace(ctx) as root:
            context = workspace_path(root, config.context, "context")
            if not context.is_dir():
                raise StepFailed(f"context {config.context!r} is not a directory of the workspace")
            if posixpath.isabs(config.dockerfile):
                raise StepFailed(
                    f"dockerfile {config.dockerfile!r} must be relative to the context"
                )
            dockerfile = workspace_path(context, config.dockerfile, "dockerfile", "the context")
            spec = BuildSpec(
                context=context,
                dockerfile=str(dockerfile.relative_to(context)),
                tags=tuple(config.tags),
                build_args=config.build_args,
                cache_from=tuple(config.cache_from),
                target=config.target,
                pull=config.pull,
            )
            built = engine.build(
                spec, cancel=ctx.cancel, deadline=ctx.deadline, on_line=ctx.log.line
            )
        names = ", ".join(built.tags) or "no tag"
        ctx.log.line(f"built {built.image_id} ({names})", "system")
        return {
            "image_id": built.image_id,
            "digest": built.digest,
            "tags": list(built.tags),
            "image": built.tags[0] if built.tags else built.image_id,
            "context": config.context,
        }
