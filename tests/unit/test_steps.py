"""The built-in steps step.shell_exec, step.log and step.set, run for real."""

from __future__ import annotations

import importlib
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from conveyor.orchestrator.contracts import StepType
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepFailed, StepTimeout
from conveyor.steps.artifact_pull import ArtifactPull
from conveyor.steps.artifact_push import ArtifactPush
from conveyor.steps.docker import DockerBuild, DockerPush, DockerRun
from conveyor.steps.log import Log
from conveyor.steps.scan import ScanContainer, ScanDeps, ScanSast
from conveyor.steps.set import Set
from conveyor.steps.shell_exec import ShellExec, parse_outputs
from tests.unit.fakes import FakeContext

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


@pytest.fixture
def ctx(tmp_path: Path) -> FakeContext:
    return FakeContext(data_dir=tmp_path / "data")


def shell(ctx: FakeContext, *commands: str, **config: Any) -> dict[str, Any]:
    """Validate a shell_exec config the way the runtime does, then run it."""
    step = ShellExec()
    return dict(step.run(ctx, step.Config.model_validate({"commands": commands, **config})))


# --- all steps ---------------------------------------------------------------------


@pytest.mark.parametrize("step", [ShellExec(), Log(), Set()])
def test_every_step_satisfies_the_contract(step: Any) -> None:
    assert isinstance(step, StepType)
    assert step.Config.model_config.get("extra") == "forbid"
    schema = step.Config.model_json_schema()
    assert all("description" in field for field in schema["properties"].values())


def test_the_entry_points_name_these_classes() -> None:
    entry_points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    found = {}
    for name, target in entry_points["conveyor.steps"].items():
        module, attribute = target.split(":")
        found[name] = getattr(importlib.import_module(module), attribute)
    assert found == {
        "step.shell_exec": ShellExec,
        "step.log": Log,
        "step.set": Set,
        "step.artifact_push": ArtifactPush,
        "step.artifact_pull": ArtifactPull,
        "step.docker_build": DockerBuild,
        "step.docker_push": DockerPush,
        "step.docker_run": DockerRun,
        "step.scan_sast": ScanSast,
        "step.scan_deps": ScanDeps,
        "step.scan_container": ScanContainer,
    }


@pytest.mark.parametrize(
    ("step", "queue", "shell_fields"),
    [(ShellExec, "sandbox", {"commands"}), (Log, "control", set()), (Set, "control", set())],
)
def test_queues_and_shell_fields(step: Any, queue: str, shell_fields: set[str]) -> None:
    assert (step.queue, set(step.shell_fields)) == (queue, shell_fields)


# --- step.shell_exec ---------------------------------------------------------------


def test_commands_run_in_turn_and_their_output_is_logged(ctx: FakeContext) -> None:
    outputs = shell(ctx, "echo one", "echo two >&2")
    assert ctx.log.lines == ["$ echo one", "one", "$ echo two >&2", "two"]
    assert outputs == {"exit_code": 0, "stdout": "one\ntwo"}


def test_a_multi_line_command_is_logged_like_a_shell_shows_it(ctx: FakeContext) -> None:
    shell(ctx, "for n in 1 2; do\n  echo $n\ndone")
    assert ctx.log.lines == ["$ for n in 1 2; do", ">   echo $n", "> done", "1", "2"]


def test_the_first_failing_command_fails_the_step(ctx: FakeContext) -> None:
    # Given three commands of which the second exits 3
    with pytest.raises(StepFailed) as failed:
        shell(ctx, "true", "echo testing; exit 3", "echo never")
    # Then the step fails naming it, and the third never ran
    assert failed.value.message == "command 2 of 3 exited with 3: echo testing; exit 3"
    assert failed.value.exit_code == 3
    assert "never" not in ctx.log.lines


def test_a_long_failing_command_is_shortened_in_the_message(ctx: FakeContext) -> None:
    command = "false " + "x" * 200
    with pytest.raises(StepFailed, match=r"^command 1 of 1 exited with 1: false x+…$") as failed:
        shell(ctx, command)
    assert len(failed.value.message) < 120


def test_stdout_keeps_the_last_hundred_lines(ctx: FakeContext) -> None:
    stdout = shell(ctx, "seq 1 150")["stdout"]
    assert stdout.splitlines() == [str(n) for n in range(51, 151)]


def test_stdout_is_capped_at_64_kib(ctx: FakeContext) -> None:
    stdout = shell(ctx, "head -c 300000 /dev/zero | tr '\\0' a")["stdout"]
    assert len(stdout.encode()) == 64 * 1024


def test_files_persist_between_steps_of_a_run(ctx: FakeContext) -> None:
    shell(ctx, "mkdir -p dist", "echo v1 > dist/version")
    ctx.step_key = "test"
    assert shell(ctx, "cat dist/version")["stdout"] == "v1"


def test_work_dir_is_created_and_used(ctx: FakeContext) -> None:
    stdout = shell(ctx, "pwd -P", work_dir="/workspace/app")["stdout"]
    assert stdout == str((ctx.workspace / "app").resolve())


def test_template_values_reach_the_shell_as_data_not_code(ctx: FakeContext) -> None:
    # Given a template value that is a shell injection attempt
    ctx.env = {"CONVEYOR_VALUE_1": "$(touch pwned); `touch pwned2`"}
    # When a command uses it through its variable
    stdout = shell(ctx, 'echo "$CONVEYOR_VALUE_1"')["stdout"]
    # Then it is printed literally and nothing ran
    assert stdout == "$(touch pwned); `touch pwned2`"
    assert list(ctx.workspace.glob("pwned*")) == []


def test_config_env_is_added_to_the_context_env(ctx: FakeContext) -> None:
    ctx.env = {"GO_VERSION": "1.25", "MODE": "pipeline"}
    stdout = shell(ctx, 'echo "$GO_VERSION $MODE"', env={"MODE": "step"})["stdout"]
    assert stdout == "1.25 step"


def test_outputs_written_to_the_outputs_file_become_step_outputs(ctx: FakeContext) -> None:
    outputs = shell(
        ctx,
        'echo "image_id=sha256:abc" >> "$CONVEYOR_OUTPUT"',
        'echo "url=https://x.test/?a=b" >> "$CONVEYOR_OUTPUT"',
        'printf "notes<<EOF\\nline one\\nline two\\nEOF\\n" >> "$CONVEYOR_OUTPUT"',
    )
    assert outputs["image_id"] == "sha256:abc"
    assert outputs["url"] == "https://x.test/?a=b"
    assert outputs["notes"] == "line one\nline two"
    assert outputs["exit_code"] == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("stdout=hijacked", "'stdout' is set by step.shell_exec itself"),
        ("exit_code=0", "'exit_code' is set by step.shell_exec itself"),
        ("1st=x", "'1st' is not an output name"),
        ("has space=x", "'has space' is not an output name"),
        ("just text", "expected key=value or key<<DELIMITER"),
        ("body<<END", "body<<END has no closing END line"),
    ],
)
def test_bad_outputs_fail_the_step_clearly(ctx: FakeContext, line: str, reason: str) -> None:
    with pytest.raises(StepFailed, match="CONVEYOR_OUTPUT line 1: " + reason):
        shell(ctx, f"echo '{line}' >> \"$CONVEYOR_OUTPUT\"")


def test_each_attempt_starts_with_empty_outputs(ctx: FakeContext) -> None:
    shell(ctx, 'echo "flaky=yes" >> "$CONVEYOR_OUTPUT"')
    ctx.attempt = 2
    assert "flaky" not in shell(ctx, "true")


def test_a_workspace_cleaned_by_a_command_just_records_no_outputs(ctx: FakeContext) -> None:
    outputs = shell(ctx, "rm -rf .conveyor")
    assert outputs == {"exit_code": 0, "stdout": ""}


def test_a_timeout_stops_the_step(ctx: FakeContext) -> None:
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="timed out after 500ms"):
        shell(ctx, "sleep 30", timeout="500ms")
    assert time.monotonic() - started < 5


def test_cancelling_the_run_stops_the_step(ctx: FakeContext) -> None:
    threading.Timer(0.3, ctx.cancel.set).start()
    with pytest.raises(StepCancelled):
        shell(ctx, "sleep 30", "touch second")
    assert not (ctx.workspace / "second").exists()


def test_an_image_is_refused_by_the_local_sandbox(ctx: FakeContext) -> None:
    with pytest.raises(SandboxError, match="cannot run images"):
        shell(ctx, "echo hi", image="node:20-alpine")


@pytest.mark.parametrize(
    "config",
    [
        {"commands": []},
        {"commands": ["true"], "artifact": "x"},
        {"commands": ["true"], "timeout": "soon"},
    ],
)
def test_a_bad_shell_exec_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ShellExec.Config.model_validate(config)


def test_the_seeds_example_config_validates() -> None:
    config: Any = ShellExec.Config.model_validate(
        {
            "image": "node:20-alpine",
            "commands": ["npm ci", "npm run build"],
            "work_dir": "/workspace",
            "timeout": "300s",
            "env": {"NODE_ENV": "production"},
        }
    )
    assert config.timeout == 300.0


def test_parse_outputs_follows_github_rules() -> None:
    text = "a=1\r\n\nb=x=y\nc<<EOF\nk=v\n\nEOF\na=2\n"
    assert parse_outputs(text) == {"a": "2", "b": "x=y", "c": "k=v\n"}


# --- step.log and step.set ---------------------------------------------------------


def validated(step: Any, config: dict[str, Any]) -> BaseModel:
    model: BaseModel = step.Config.model_validate(config)
    return model


def test_log_writes_each_line_of_the_message(ctx: FakeContext) -> None:
    outputs = Log().run(ctx, validated(Log, {"message": "deploying\nv1.2"}))
    assert ctx.log.records == [("stdout", "deploying"), ("stdout", "v1.2")]
    assert outputs == {"message": "deploying\nv1.2"}


@pytest.mark.parametrize(("level", "prefix"), [("warn", "WARN: "), ("error", "ERROR: ")])
def test_log_marks_warnings_and_errors(ctx: FakeContext, level: str, prefix: str) -> None:
    Log().run(ctx, validated(Log, {"message": "disk almost full", "level": level}))
    assert ctx.log.records == [("stderr", f"{prefix}disk almost full")]


@pytest.mark.parametrize(
    "config", [{}, {"message": "x", "level": "loud"}, {"message": "x", "y": 1}]
)
def test_a_bad_log_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Log.Config.model_validate(config)


def test_set_publishes_its_values_as_outputs(ctx: FakeContext) -> None:
    values = {"version": "1.2.3", "replicas": 3, "tags": ["a", "b"], "image-tag": "x"}
    assert Set().run(ctx, validated(Set, {"values": values})) == values


@pytest.mark.parametrize(
    "config", [{}, {"values": {"bad key": 1}}, {"values": {"a": 1}, "extra": True}]
)
def test_a_bad_set_config_is_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Set.Config.model_validate(config)
