"""``step.docker_run``: run an image's command in a container, to its end by default.

The container gets the sandbox's defaults (no network unless allowed, no capabilities,
no new privileges, a pids limit, checked mounts) and the run's workspace at
``/workspace``. Its stdout and stderr stream to the step's log and become outputs, each
cut to its last 64 KiB. A timeout or a cancel kills it; it is removed in every case.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.orchestrator.contracts import (
    ContainerResult,
    SandboxConfig,
    SandboxRequest,
    StepContext,
)
from conveyor.orchestrator.durations import Duration
from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.queues import SANDBOX

from .common import image_engine, run_workspace

CAP_NOTE = "{stream} was longer than 64 KiB: the {stream} output keeps its last 64 KiB"


class DockerRunConfig(BaseModel):
    """The seed's keys for ``step.docker_run``, plus the sandbox's limits."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="Image to run.")
    command: list[str] | None = Field(
        default=None,
        description="Command and arguments (no shell: use [sh, -c, ...] for one); the "
        "image's own command when omitted.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables.")
    wait_for_exit: bool = Field(
        default=True,
        description="Wait for the container to exit; false starts it and returns at once "
        "(it is removed when it exits).",
    )
    timeout: Duration | None = Field(
        default=None, description="Kill the container after this long, e.g. 120s or 10m."
    )
    fail_on_exit_code: bool = Field(
        default=True,
        description="Fail the step when the container exits non-zero; false records "
        "exit_code and succeeds.",
    )
    work_dir: str | None = Field(
        default=None, description="Working directory, under /workspace; the image's own if unset."
    )
    network_mode: str | None = Field(
        default=None, description="Container network; none by default."
    )
    memory_limit: str | int | None = Field(default=None, description="Memory limit, e.g. 512m.")
    cpu_limit: float | None = Field(default=None, gt=0, description="CPUs the container may use.")
    mounts: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra bind mounts {source, target, read_only}."
    )

    @model_validator(mode="after")
    def _timeout_needs_a_wait(self) -> DockerRunConfig:
        if self.timeout is not None and not self.wait_for_exit:
            raise ValueError("timeout needs wait_for_exit: true (nothing waits otherwise)")
        return self


class DockerRun:
    """Runs a command inside a Docker container with the run's workspace mounted."""

    Config: type[BaseModel] = DockerRunConfig
    queue = SANDBOX
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: DockerRunConfig) -> dict[str, Any]:
        """Run it; outputs ``exit_code``, ``stdout``, ``stderr``, ``image``, ``container_id``."""
        engine = image_engine(ctx)
        request = SandboxRequest(
            ctx.run_id, ctx.step_key, SandboxConfig.of(config), ctx.cancel, ctx.deadline
        )
        with run_workspace(ctx) as workspace:
            result = engine.run(
                request,
                command=config.command,
                workspace=workspace,
                wait=config.wait_for_exit,
                on_stdout=lambda text: ctx.log.line(text, "stdout"),
                on_stderr=lambda text: ctx.log.line(text, "stderr"),
            )
        for stream in result.cut:
            ctx.log.line(CAP_NOTE.format(stream=stream), "system")
        if result.exit_code is None:
            ctx.log.line(f"started container {result.container_id[:12]}", "system")
        elif result.exit_code != 0 and config.fail_on_exit_code:
            raise StepFailed(
                f"{config.image} exited with {result.exit_code}", exit_code=result.exit_code
            )
        return _outputs(config.image, result)


def _outputs(image: str, result: ContainerResult) -> dict[str, Any]:
    return {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "image": image,
        "container_id": result.container_id,
    }
