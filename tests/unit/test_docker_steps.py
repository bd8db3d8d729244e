"""step.docker_build, step.docker_push and step.docker_run against an in-memory engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.orchestrator.contracts import (
    ContainerResult,
    ImageEngine,
    RegistryAuth,
    SandboxRequest,
    StepType,
)
from conveyor.orchestrator.errors import PluginError, StepFailed
from conveyor.orchestrator.testing import MemoryImageEngine
from conveyor.steps.docker import DockerBuild, DockerPush, DockerRun
from tests.unit.fakes import FakeContext

IMAGE_ID = "sha256:" + "1" * 64
DIGEST = "sha256:" + "2" * 64


@dataclass
class DockerContext(FakeContext):
    """A FakeContext whose ``docker`` provider is the in-memory engine."""

    engine: Any = field(default_factory=lambda: MemoryImageEngine(image_id=IMAGE_ID, digest=DIGEST))

    def provider(self, name: str) -> Any:
        return self.engine if name == "docker" else super().provider(name)


@pytest.fixture
def ctx(tmp_path: Path) -> DockerContext:
    context = DockerContext(data_dir=tmp_path / "data")
    (context.workspace / "app").mkdir(parents=True)
    (context.workspace / "app" / "Dockerfile").write_text("FROM scratch\n")
    return context


def call(step: Any, ctx: DockerContext, **config: Any) -> dict[str, Any]:
    """Validate ``config`` the way the compiler does, then run the step."""
    return dict(step.run(ctx, step.Config.model_validate(config)))


def test_the_twin_is_an_image_engine() -> None:
    engine: ImageEngine = MemoryImageEngine()
    assert isinstance(engine, ImageEngine)


@pytest.mark.parametrize("step", [DockerBuild(), DockerPush(), DockerRun()])
def test_every_docker_step_satisfies_the_contract(step: Any) -> None:
    assert isinstance(step, StepType)
    assert step.queue == "sandbox"
    assert step.Config.model_config.get("extra") == "forbid"
    schema = step.Config.model_json_schema()
    assert all("description" in spec for spec in schema["properties"].values())


# --- step.docker_build -------------------------------------------------------------


@pytest.mark.parametrize("context", ["app", "./app", "/workspace/app", "/workspace/./app/"])
def test_the_context_is_a_workspace_directory(ctx: DockerContext, context: str) -> None:
    # Given the code in the workspace's app/ directory
    # When an image is built from it, however the path is written
    outputs = call(DockerBuild(), ctx, context=context, tags=["app:1", "app:latest"])
    # Then the engine builds that host directory, and the outputs name the image
    spec = ctx.engine.builds[0]
    assert spec.context == (ctx.workspace / "app").resolve()
    assert (spec.dockerfile, spec.tags, spec.pull) == ("Dockerfile", ("app:1", "app:latest"), False)
    assert outputs == {
        "image_id": IMAGE_ID,
        "digest": IMAGE_ID,
        "tags": ["app:1", "app:latest"],
        "image": "app:1",
        "context": context,
    }
    assert "Step 1/1 : FROM scratch" in ctx.log.lines


def test_build_options_reach_the_engine(ctx: DockerContext) -> None:
    (ctx.workspace / "app" / "docker").mkdir()
    (ctx.workspace / "app" / "docker" / "Dockerfile.ci").write_text("FROM scratch\n")
    call(
        DockerBuild(),
        ctx,
        context="app",
        dockerfile="docker/Dockerfile.ci",
        build_args={"VERSION": "1.2"},
        cache_from=["app:latest"],
        target="test",
    )
    spec = ctx.engine.builds[0]
    assert spec.dockerfile == "docker/Dockerfile.ci"
    assert (dict(spec.build_args), spec.cache_from, spec.target) == (
        {"VERSION": "1.2"},
        ("app:latest",),
        "test",
    )


def test_without_tags_the_image_is_known_by_its_id(ctx: DockerContext) -> None:
    outputs = call(DockerBuild(), ctx, context="app")
    assert (outputs["image"], outputs["tags"]) == (IMAGE_ID, [])


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"context": ".."}, "context '..' is outside the workspace"),
        ({"context": "/etc"}, "context '/etc' is outside the workspace: use a relative path"),
        ({"context": "escape"}, "context 'escape' is outside the workspace"),
        ({"context": "missing"}, "context 'missing' is not a directory of the workspace"),
        ({"context": "app", "dockerfile": "../Dockerfile"}, "is outside the context"),
        ({"context": "app", "dockerfile": "/workspace/app/Dockerfile"}, "relative to the context"),
    ],
)
def test_paths_that_leave_the_workspace_are_refused(
    ctx: DockerContext, config: dict[str, Any], reason: str
) -> None:
    # Given a link in the workspace that points outside it
    (ctx.workspace / "escape").symlink_to("/etc")
    # When a build names a path outside, Then the step fails before the engine is asked
    with pytest.raises(StepFailed, match=reason):
        call(DockerBuild(), ctx, **config)
    assert ctx.engine.builds == []


def test_a_provider_that_is_no_image_engine_is_a_plugin_error(ctx: DockerContext) -> None:
    ctx.engine = object()
    with pytest.raises(PluginError, match="not an ImageEngine"):
        call(DockerBuild(), ctx, context="app")


# --- step.docker_push --------------------------------------------------------------


def test_a_registry_is_prepended_by_tagging_first(ctx: DockerContext) -> None:
    outputs = call(DockerPush(), ctx, image="app:1", registry="127.0.0.1:5000/team/")
    assert ctx.engine.tags == [("app:1", "127.0.0.1:5000/team/app:1")]
    assert ctx.engine.pushes == [("127.0.0.1:5000/team/app:1", None)]
    assert outputs == {
        "image": "127.0.0.1:5000/team/app:1",
        "registry": "127.0.0.1:5000/team/",
        "digest": DIGEST,
        "reference": f"127.0.0.1:5000/team/app@{DIGEST}",
        "auth_provider": "",
    }


def test_an_image_already_under_the_registry_is_pushed_as_it_is(ctx: DockerContext) -> None:
    call(DockerPush(), ctx, image="127.0.0.1:5000/app", registry="127.0.0.1:5000")
    assert ctx.engine.tags == []
    assert ctx.engine.pushes[0][0] == "127.0.0.1:5000/app"


def test_credentials_reach_the_engine_and_never_the_log_or_outputs(ctx: DockerContext) -> None:
    outputs = call(
        DockerPush(),
        ctx,
        image="ghcr.io/org/app:1",
        auth={"username": "ci", "password": "s3cret-token"},
        auth_provider="ghcr",
    )
    assert ctx.engine.pushes == [("ghcr.io/org/app:1", RegistryAuth("ci", "s3cret-token"))]
    assert "s3cret-token" not in repr(ctx.engine.pushes)
    assert "s3cret-token" not in " ".join(ctx.log.lines) + repr(outputs)
    assert outputs["auth_provider"] == "ghcr"


def test_push_config_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="extra"):
        DockerPush.Config.model_validate({"image": "a", "token": "x"})


# --- step.docker_run ---------------------------------------------------------------


def test_a_container_runs_with_the_workspace_and_its_output_streams(ctx: DockerContext) -> None:
    outputs = call(
        DockerRun(),
        ctx,
        image="app:1",
        command=["python3", "-m", "unittest"],
        env={"CI": "true"},
        timeout="2m",
    )
    # The engine was asked for the image, the command, the limits and the workspace
    run = ctx.engine.runs[0]
    request: SandboxRequest = run["request"]
    assert (request.run_id, request.step_key) == (ctx.run_id, ctx.step_key)
    assert (request.config.image, request.config.env, request.config.timeout) == (
        "app:1",
        {"CI": "true"},
        120.0,
    )
    assert run["command"] == ["python3", "-m", "unittest"]
    assert run["workspace"] == ctx.workspace.resolve()
    # Its streams show in the log, and are the outputs
    assert ("stdout", "out") in ctx.log.records
    assert ("stderr", "err") in ctx.log.records
    assert outputs["exit_code"] == 0
    assert (outputs["stdout"], outputs["stderr"], outputs["image"]) == ("out\n", "err\n", "app:1")


def test_a_non_zero_exit_fails_the_step_with_its_code(ctx: DockerContext) -> None:
    ctx.engine.result = ContainerResult("c1", 3, "", "boom\n")
    with pytest.raises(StepFailed, match="app:1 exited with 3") as caught:
        call(DockerRun(), ctx, image="app:1")
    assert caught.value.exit_code == 3


def test_a_non_zero_exit_can_be_recorded_instead(ctx: DockerContext) -> None:
    ctx.engine.result = ContainerResult("c1", 3, "", "boom\n")
    outputs = call(DockerRun(), ctx, image="app:1", fail_on_exit_code=False)
    assert (outputs["exit_code"], outputs["stderr"]) == (3, "boom\n")


def test_cut_output_is_said_in_the_log(ctx: DockerContext) -> None:
    ctx.engine.result = ContainerResult("c1", 0, "x\n", "", cut=("stdout",))
    call(DockerRun(), ctx, image="app:1")
    assert (
        "system",
        "stdout was longer than 64 KiB: the stdout output keeps its last 64 KiB",
    ) in ctx.log.records


def test_without_waiting_the_step_returns_once_it_started(ctx: DockerContext) -> None:
    outputs = call(DockerRun(), ctx, image="app:1", wait_for_exit=False)
    assert outputs["exit_code"] is None
    assert outputs["container_id"] == ctx.engine.result.container_id


def test_a_timeout_without_waiting_is_refused() -> None:
    with pytest.raises(ValidationError, match="timeout needs wait_for_exit: true"):
        DockerRun.Config.model_validate({"image": "a", "wait_for_exit": False, "timeout": "1m"})
