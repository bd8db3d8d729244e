"""The ``docker`` provider (ImageEngine) against the real engine and a real registry.

Images are built FROM the locally made ``conveyor-test/busybox`` (nothing is pulled);
the registry is Debian's ``docker-registry`` started on a free loopback port.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import (
    BuildSpec,
    ImageEngine,
    RegistryAuth,
    SandboxConfig,
    SandboxRequest,
)
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepFailed, StepTimeout
from conveyor.orchestrator.plugins import Providers, Sandboxes
from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker import RUN_LABEL, DockerEngine
from conveyor.providers.docker.progress import OUTPUT_CAP
from tests.integration.registry_kit import (
    BUSYBOX,
    Registry,
    docker_client,
    docker_config,
    free_port,
    registry,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine_client() -> Any:
    """A client of the engine, with the busybox base image built."""
    return docker_client(BUSYBOX)


@pytest.fixture
def engine(engine_client: Any, settings: Settings) -> Iterator[DockerEngine]:
    """The provider; every image a test tagged ``conveyor-test-built/...`` goes afterwards."""
    yield DockerEngine(settings)
    for image in engine_client.api.images():
        for tag in image.get("RepoTags") or []:
            if "conveyor-test-built" in tag:
                engine_client.images.remove(tag, force=True)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    with registry(tmp_path / "registry") as found:
        yield found


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Registry]:
    with registry(tmp_path / "locked", users={"ci": "s3cret"}) as found:
        yield found


def name() -> str:
    """A fresh image name the engine fixture removes afterwards."""
    return f"conveyor-test-built/{uuid.uuid4().hex[:8]}"


def context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    """A build context holding a Dockerfile (FROM busybox first) and ``files``."""
    root = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    (root / "Dockerfile").write_text(f"FROM {BUSYBOX}\n{dockerfile}")
    for file, text in files.items():
        (root / file).write_text(text)
    return root


def build(engine: DockerEngine, spec: BuildSpec, lines: list[str] | None = None) -> Any:
    return engine.build(spec, cancel=threading.Event(), deadline=None, on_line=_sink(lines))


def _sink(lines: list[str] | None) -> Any:
    return lines.append if lines is not None else None


def request(cancel: threading.Event | None = None, **config: Any) -> SandboxRequest:
    config.setdefault("image", BUSYBOX)
    run_id = f"t{uuid.uuid4().hex[:10]}"
    return SandboxRequest(run_id, "s", SandboxConfig(**config), cancel or threading.Event(), None)


def containers_of(client: Any, run_id: str) -> int:
    return len(client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}))


def test_the_provider_is_an_image_engine(engine: DockerEngine) -> None:
    assert isinstance(engine, ImageEngine)


# --- build ---------------------------------------------------------------------------


def test_a_build_applies_every_tag_and_streams_its_steps(
    engine: DockerEngine, tmp_path: Path, engine_client: Any
) -> None:
    # Given a context whose Dockerfile copies a file and uses a build argument
    ctx = context(
        tmp_path,
        "ARG GREETING=none\nCOPY hello.txt /\nRUN echo $GREETING > /greeting\n",
        **{"hello.txt": "hello\n"},
    )
    tags = (f"{name()}:1", f"{name()}:latest")
    lines: list[str] = []
    # When it is built
    built = build(engine, BuildSpec(ctx, tags=tags, build_args={"GREETING": "hi"}), lines)
    # Then the image has both names, its id is the digest (no registry gave it one yet)
    assert built.image_id.startswith("sha256:")
    assert (built.digest, built.tags) == (built.image_id, tags)
    for tag in tags:
        assert engine_client.images.get(tag).id == built.image_id
    assert any(line.startswith("Step 3/4 : COPY hello.txt") for line in lines)
    # And the build argument reached the RUN instruction
    out = engine_client.containers.run(
        tags[0], ["cat", "/greeting"], remove=True, network_mode="none"
    )
    assert out == b"hi\n"


def test_a_target_stage_stops_the_build_there(engine: DockerEngine, tmp_path: Path) -> None:
    ctx = tmp_path / "multi"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {BUSYBOX} AS test\nRUN echo test > /stage\nFROM test AS release\nRUN exit 9\n"
    )
    built = build(engine, BuildSpec(ctx, tags=(f"{name()}:t",), target="test"))
    assert built.image_id.startswith("sha256:")


def test_a_failing_instruction_is_named_in_one_line(engine: DockerEngine, tmp_path: Path) -> None:
    ctx = context(tmp_path, "RUN echo fine\nRUN exit 3\n")
    with pytest.raises(StepFailed) as caught:
        build(engine, BuildSpec(ctx, tags=(f"{name()}:x",)))
    assert str(caught.value) == (
        "build failed at step 3/3 (RUN exit 3): "
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    )


def test_a_missing_base_image_says_so(engine: DockerEngine, tmp_path: Path) -> None:
    ctx = tmp_path / "nobase"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM conveyor-test/no-such-base:1\n")
    with pytest.raises(
        StepFailed,
        match=r"^build failed at step 1/1 \(FROM conveyor-test/no-such-base:1\): the base image "
        "is not on this engine and could not be pulled: ",
    ) as caught:
        build(engine, BuildSpec(ctx))
    assert "\n" not in str(caught.value)


def test_a_missing_dockerfile_says_so(engine: DockerEngine, tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="there is no Dockerfile in the build context"):
        build(engine, BuildSpec(tmp_path))


def test_cancel_stops_a_build_and_leaves_no_container(
    engine: DockerEngine, tmp_path: Path, engine_client: Any
) -> None:
    # Given a build busy in a long RUN
    ctx = context(tmp_path, f"RUN echo started-{uuid.uuid4().hex} && sleep 60\n")
    cancel = threading.Event()
    lines: list[str] = []

    def cancel_once_started() -> None:
        until = time.monotonic() + 60
        while not any("started-" in line for line in lines) and time.monotonic() < until:
            time.sleep(0.05)
        cancel.set()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    started = time.monotonic()
    # When the step is cancelled, Then the build stops now, not a minute later
    with pytest.raises(StepCancelled):
        engine.build(BuildSpec(ctx), cancel=cancel, deadline=None, on_line=lines.append)
    assert time.monotonic() - started < 45

    # And the engine threw its build container away
    def left() -> list[Any]:
        return [
            c
            for c in engine_client.api.containers(all=True)
            if "sleep 60" in str(c.get("Command", ""))
        ]

    until = time.monotonic() + 20
    while left() and time.monotonic() < until:
        time.sleep(0.2)
    assert left() == []


# --- push ----------------------------------------------------------------------------


def pushable(engine: DockerEngine, tmp_path: Path, host: str) -> str:
    """A freshly built image, tagged for the registry at ``host``."""
    built = build(engine, BuildSpec(context(tmp_path, f"RUN echo {uuid.uuid4().hex} > /id\n")))
    reference = f"{host}/conveyor-test-built/app:{uuid.uuid4().hex[:6]}"
    engine.tag(built.image_id, reference)
    return reference


def push(
    engine: DockerEngine,
    reference: str,
    auth: RegistryAuth | None = None,
    lines: list[str] | None = None,
) -> str:
    return engine.push(
        reference, auth=auth, cancel=threading.Event(), deadline=None, on_line=_sink(lines)
    )


def test_a_push_lands_in_the_registry_with_the_digest_it_reports(
    engine: DockerEngine, tmp_path: Path, reg: Registry
) -> None:
    reference = pushable(engine, tmp_path, reg.host)
    lines: list[str] = []
    digest = push(engine, reference, lines=lines)
    repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
    assert reg.tags(repository) == [tag]
    assert reg.digest(repository, tag) == digest
    assert any(f"digest: {digest}" in line for line in lines)
    assert not any("Pushing" in line for line in lines)  # progress ticks stay out


def test_a_registry_that_wants_credentials_refuses_a_push_without(
    engine: DockerEngine, tmp_path: Path, locked: Registry
) -> None:
    reference = pushable(engine, tmp_path, locked.host)
    with pytest.raises(StepFailed) as caught:
        push(engine, reference)
    assert str(caught.value).startswith(f"push of {reference} was denied by {locked.host}: ")
    with pytest.raises(StepFailed, match="was denied"):
        push(engine, reference, RegistryAuth("ci", "wrong"))


def test_credentials_from_the_step_or_the_engines_config_are_used(
    engine: DockerEngine,
    tmp_path: Path,
    locked: Registry,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the step's own credentials
    first = pushable(engine, tmp_path, locked.host)
    assert push(engine, first, RegistryAuth("ci", "s3cret")).startswith("sha256:")
    # Given instead a worker logged in to the registry (docker login's config.json)
    monkeypatch.setenv(
        "DOCKER_CONFIG", str(docker_config(tmp_path / "cfg", locked.host, "ci", "s3cret"))
    )
    logged_in = DockerEngine(settings)
    second = pushable(logged_in, tmp_path, locked.host)
    assert push(logged_in, second).startswith("sha256:")
    assert len(locked.tags("conveyor-test-built/app")) == 2


def test_an_unreachable_registry_says_so(engine: DockerEngine, tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    reference = pushable(engine, tmp_path, host)
    with pytest.raises(StepFailed, match=f"^the registry {host} is unreachable: "):
        push(engine, reference)


def test_pushing_an_image_that_is_not_there_says_so(engine: DockerEngine) -> None:
    with pytest.raises(SandboxError, match="is not on this Docker engine"):
        push(engine, "127.0.0.1:1/conveyor-test-built/none:1")


# --- run -----------------------------------------------------------------------------


def run(
    engine: DockerEngine,
    req: SandboxRequest,
    command: list[str] | None,
    workspace: Path | None = None,
    **kwargs: Any,
) -> Any:
    return engine.run(req, command=command, workspace=workspace, **kwargs)


def test_a_container_runs_to_its_end_with_its_streams_apart(
    engine: DockerEngine, engine_client: Any
) -> None:
    req = request(env={"WHO": "you"})
    out: list[str] = []
    err: list[str] = []
    script = 'echo "hi $WHO"; echo oops >&2; echo "$CI $CONVEYOR_WORKSPACE"; exit 4'
    result = run(engine, req, ["sh", "-c", script], on_stdout=out.append, on_stderr=err.append)
    assert (result.exit_code, result.stdout, result.stderr) == (
        4,
        "hi you\ntrue /workspace\n",
        "oops\n",
    )
    assert (out, err) == (["hi you", "true /workspace"], ["oops"])
    assert containers_of(engine_client, req.run_id) == 0


def test_the_runs_workspace_is_mounted(engine: DockerEngine, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "in.txt").write_text("from the host\n")
    result = run(
        engine,
        request(),
        ["sh", "-c", "cat /workspace/in.txt && echo back > /workspace/out.txt"],
        workspace,
    )
    assert (result.exit_code, result.stdout) == (0, "from the host\n")
    assert (workspace / "out.txt").read_text() == "back\n"


def test_the_sandbox_defaults_apply(engine: DockerEngine) -> None:
    script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; grep CapEff /proc/self/status"
    result = run(engine, request(), ["sh", "-c", script])
    assert result.stdout.splitlines() == ["lo", "CapEff:\t0000000000000000"]


def test_mounts_are_checked(engine: DockerEngine, tmp_path: Path) -> None:
    mount = {"source": str(tmp_path), "target": "/workspace/data"}
    with pytest.raises(SandboxError, match="would shadow or sit under /workspace"):
        run(engine, request(mounts=[mount]), ["true"])


def test_a_timeout_kills_and_removes_the_container(
    engine: DockerEngine, engine_client: Any
) -> None:
    req = request(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="timed out after 1"):
        run(engine, req, ["sleep", "60"])
    assert time.monotonic() - started < 20
    assert containers_of(engine_client, req.run_id) == 0


def test_cancel_kills_and_removes_the_container(engine: DockerEngine, engine_client: Any) -> None:
    cancel = threading.Event()
    req = request(cancel=cancel)
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(StepCancelled):
        run(engine, req, ["sleep", "60"])
    assert containers_of(engine_client, req.run_id) == 0


def test_long_output_keeps_its_last_64_kib(engine: DockerEngine) -> None:
    lines: list[str] = []
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    result = run(engine, request(), ["sh", "-c", script], on_stdout=lines.append)
    assert result.cut == ("stdout",)
    assert len(result.stdout.encode()) <= OUTPUT_CAP
    assert result.stdout.endswith("line-2999-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n")
    assert len(lines) == 3000  # the log has every line


def test_a_missing_image_gets_a_one_line_reason(engine: DockerEngine) -> None:
    with pytest.raises(SandboxError) as caught:
        run(engine, request(image="conveyor-test/no-such-image:1"), None)
    assert str(caught.value) == (
        "image conveyor-test/no-such-image:1 is not on this Docker engine (build or pull it first)"
    )


def test_a_container_not_waited_for_goes_once_it_exits(
    engine: DockerEngine, engine_client: Any
) -> None:
    req = request()
    result = run(engine, req, ["sleep", "1"], wait=False)
    assert result.exit_code is None
    until = time.monotonic() + 30
    while containers_of(engine_client, req.run_id) and time.monotonic() < until:
        time.sleep(0.2)
    assert containers_of(engine_client, req.run_id) == 0


def test_an_unreachable_engine_gets_a_one_line_reason(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(SandboxError, match=r"^the Docker engine is unreachable: ") as caught:
        DockerEngine(settings).tag("a", "b")
    assert "\n" not in str(caught.value)


def test_the_runs_end_removes_a_container_still_running(
    engine: DockerEngine, engine_client: Any, settings: Settings
) -> None:
    """Given a detached container of a run (wait_for_exit: false) that runs on
    When the run is over and its sandboxes and providers clean up
    Then the container is gone, and cleaning up again does nothing."""
    req = request()
    run(engine, req, ["sleep", "600"], wait=False)
    assert containers_of(engine_client, req.run_id) == 1
    sandboxes = Sandboxes(settings)
    sandboxes.providers = Providers(settings, {"docker": engine})
    sandboxes.cleanup_run(req.run_id)
    sandboxes.cleanup_run(req.run_id)
    assert containers_of(engine_client, req.run_id) == 0
