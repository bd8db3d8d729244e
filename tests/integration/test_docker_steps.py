"""The Docker steps in pipelines, through the embedded engine and the real Docker engine.

Local steps and container steps of one run share one workspace: what one writes, the
others read, whichever side it was written on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker import RUN_LABEL
from tests.integration.registry_kit import BUSYBOX, docker_client
from tests.unit.engine_kit import log_text, open_engine, pipeline, run, step

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine_client() -> Any:
    """A client of the engine, with the busybox base image built."""
    return docker_client(BUSYBOX)


@pytest.fixture
def image(engine_client: Any) -> Iterator[str]:
    """A fresh image name, removed after the test."""
    name = f"conveyor-test-built/steps-{uuid.uuid4().hex[:8]}:1"
    yield name
    for found in engine_client.api.images(name=name.split(":", maxsplit=1)[0]):
        engine_client.images.remove(found["Id"], force=True)


def leftovers(client: Any, run_id: str) -> tuple[int, int]:
    """Containers and volumes still labelled with the run."""
    label = {"label": f"{RUN_LABEL}={run_id}"}
    return len(client.api.containers(all=True, filters=label)), len(
        client.volumes.list(filters=label)
    )


def test_local_and_container_steps_share_the_workspace_both_ways(
    engine_client: Any, settings: Settings, image: str
) -> None:
    # Given a pipeline that passes files between local steps, a container step, an
    # image built from the workspace, and a container of that image
    text = pipeline(
        f"""
        - name: local-writes
          type: step.shell_exec
          config:
            commands:
              - echo from-local > a.txt
              - printf 'FROM {BUSYBOX}\\nCOPY a.txt b.txt /baked/\\n' > Dockerfile
        - name: container-reads
          type: step.shell_exec
          config:
            image: {BUSYBOX}
            commands: ["cat a.txt", "echo from-container > b.txt"]
        - name: build
          type: step.docker_build
          config: {{context: /workspace, tags: ["{image}"]}}
        - name: use
          type: step.docker_run
          config:
            image: "{{{{ .steps.build.image }}}}"
            command: [sh, -c, "cat /baked/a.txt /baked/b.txt && echo from-run > /workspace/c.txt"]
        - name: local-reads
          type: step.shell_exec
          config:
            commands: ["cat b.txt c.txt"]
        """
    )
    # When the embedded engine runs it
    with open_engine(settings) as engine:
        record = run(engine, text)
        # Then every step saw what the one before it wrote, on either side
        assert record.status == "succeeded", log_text(engine, record.id)
        assert log_text(engine, record.id, "container-reads")[1] == "from-local"
        assert step(engine, record.id, "use").outputs["stdout"] == "from-local\nfrom-container\n"
        assert log_text(engine, record.id, "local-reads")[-2:] == ["from-container", "from-run"]
        built = step(engine, record.id, "build").outputs
        assert built["tags"] == [image]
        assert engine_client.images.get(image).id == built["image_id"]
    # And the run left no container, volume or directory behind
    assert leftovers(engine_client, record.id) == (0, 0)
    assert not (settings.workspace_root / record.id).exists()


def test_a_failing_container_fails_the_run_with_its_code_and_stderr(
    engine_client: Any, settings: Settings
) -> None:
    text = pipeline(
        f"""
        - name: check
          type: step.docker_run
          config:
            image: {BUSYBOX}
            command: [sh, -c, "echo 'assertion failed' >&2; exit 3"]
        """
    )
    with open_engine(settings) as engine:
        record = run(engine, text)
        assert record.status == "failed"
        failed = step(engine, record.id, "check")
        assert failed.last_error == f"{BUSYBOX} exited with 3"
        assert "assertion failed" in log_text(engine, record.id, "check")
    assert leftovers(engine_client, record.id) == (0, 0)


def test_a_build_context_outside_the_workspace_fails_the_step(
    engine_client: Any, settings: Settings
) -> None:
    text = pipeline("- {name: b, type: step.docker_build, config: {context: ../..}}")
    with open_engine(settings) as engine:
        record = run(engine, text)
        assert record.status == "failed"
        assert step(engine, record.id, "b").last_error == (
            "context '../..' is outside the workspace"
        )
