"""The Docker sandbox against this machine's real engine and locally built images.

The engine comes from ``scripts/docker-engine`` and the images from
``scripts/base-images`` (nothing can be pulled here); without them these tests skip on
a laptop and fail under CI.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from conveyor.orchestrator.contracts import Sandbox, SandboxConfig, SandboxRequest
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepTimeout
from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker import RUN_LABEL, DockerSandboxFactory
from conveyor.providers.docker.archive import unpack
from tests.conftest import missing as _missing
from tests.unit.engine_kit import eventually, log_text, open_engine, pipeline, run, step

BUSYBOX = "conveyor-test/busybox"

pytestmark = pytest.mark.timeout(120)


def missing(component: str, reason: str) -> NoReturn:
    """Skip, or fail under CI (tests.conftest.missing), typed as never returning."""
    _missing(component, reason)
    raise AssertionError("unreachable: missing() skips or fails")


@pytest.fixture(scope="module")
def engine_client() -> Any:
    """A client of the Docker engine, with the busybox base image built."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        missing("Docker engine", f"{exc} (run scripts/docker-engine)")
    try:
        client.images.get(BUSYBOX)
    except Exception:
        missing("base image", f"{BUSYBOX} is not built (run scripts/base-images)")
    return client


@pytest.fixture
def factory(engine_client: Any, settings: Settings) -> Iterator[DockerSandboxFactory]:
    """A factory; every run it opened a sandbox for is cleaned up afterwards."""
    result = DockerSandboxFactory(settings)
    yield result
    for run_id in _runs:
        result.cleanup_run(run_id)
    _runs.clear()


_runs: set[str] = set()


def request(
    run_id: str | None = None, cancel: threading.Event | None = None, **config: Any
) -> SandboxRequest:
    """A request for one step, on busybox unless told otherwise."""
    run_id = run_id or f"t{uuid.uuid4().hex[:10]}"
    _runs.add(run_id)
    config.setdefault("image", BUSYBOX)
    return SandboxRequest(run_id, "s", SandboxConfig(**config), cancel or threading.Event(), None)


def output(sandbox: Sandbox, script: str, **kwargs: Any) -> list[str]:
    """The lines a script prints; it must succeed."""
    lines: list[str] = []
    result = sandbox.exec(script, on_line=lines.append, **kwargs)
    assert result.exit_code == 0, lines
    return lines


def count(client: Any, run_id: str) -> tuple[int, int]:
    """Containers and volumes labelled with the run.

    The low-level listing, not ``containers.list``: that one inspects each container it
    found, and a container removed in between makes it raise instead of count.
    """
    label = {"label": f"{RUN_LABEL}={run_id}"}
    return len(client.api.containers(all=True, filters=label)), len(
        client.volumes.list(filters=label)
    )


def test_the_docker_sandbox_satisfies_the_protocol(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request())
    assert isinstance(sandbox, Sandbox)
    assert output(sandbox, "ls -d /workspace/.conveyor/outputs") == ["/workspace/.conveyor/outputs"]
    sandbox.close()


def test_steps_of_one_run_share_the_workspace_and_runs_do_not(
    factory: DockerSandboxFactory,
) -> None:
    # Given a file written by one command of a first step
    first = factory.open(request("shared1"))
    first.exec("echo kept > file.txt")
    assert output(first, "cat file.txt") == ["kept"]
    first.close()
    # When a later step of the same run and a step of another run look for it
    later = factory.open(request("shared1"))
    other = factory.open(request("shared2"))
    # Then only the same run sees it
    assert output(later, "cat /workspace/file.txt") == ["kept"]
    assert other.exec("test -e file.txt").exit_code == 1
    later.close()
    other.close()


def test_lines_stream_in_order_with_stderr_merged(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request())
    script = "echo one; echo two >&2; sleep 0.2; echo three >&2; echo four"
    assert output(sandbox, script) == ["one", "two", "three", "four"]
    sandbox.close()


@pytest.mark.parametrize(("script", "code"), [("exit 3", 3), ("true", 0), ("kill -9 $$", 137)])
def test_the_exit_code_is_the_shells(factory: DockerSandboxFactory, script: str, code: int) -> None:
    sandbox = factory.open(request())
    assert sandbox.exec(script).exit_code == code
    sandbox.close()


def test_env_and_work_dir_reach_the_command(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request(env={"FROM_CONFIG": "c"}, work_dir="src"))
    assert output(sandbox, 'echo "$FROM_CONFIG $EXTRA $CI"; pwd', env={"EXTRA": "e"}) == [
        "c e true",
        "/workspace/src",
    ]
    assert output(sandbox, "pwd", work_dir="/workspace/other/dir") == ["/workspace/other/dir"]
    with pytest.raises(SandboxError, match="outside the workspace"):
        sandbox.exec("pwd", work_dir="../etc")
    sandbox.close()


def test_a_timeout_kills_the_container(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request(timeout=1.0))
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="timed out after 1"):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < 10
    sandbox.close()


def test_cancel_from_another_thread_kills_the_command(factory: DockerSandboxFactory) -> None:
    cancel = threading.Event()
    sandbox = factory.open(request(cancel=cancel))
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < 10
    sandbox.close()


def test_there_is_no_network_but_loopback(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request())
    names = output(sandbox, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    assert names == ["lo"]
    assert sandbox.exec("wget -q -T 2 -O /dev/null http://1.1.1.1/").exit_code != 0
    sandbox.close()


def test_every_capability_is_dropped(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request())
    assert output(sandbox, "grep CapEff /proc/self/status") == ["CapEff:\t0000000000000000"]
    sandbox.close()


def test_mounts_outside_the_allow_list_and_host_network_are_refused(
    factory: DockerSandboxFactory, tmp_path: Path
) -> None:
    mount = {"source": str(tmp_path), "target": "/data", "read_only": True}
    with pytest.raises(SandboxError, match="outside the allowed host paths"):
        factory.open(request(mounts=[mount]))
    with pytest.raises(SandboxError, match="network_mode host is not allowed"):
        factory.open(request(network_mode="host"))
    with pytest.raises(SandboxError, match="mount"):
        factory.open(request(mounts=[{**mount, "privileged": True}]))


def test_an_allowed_mount_is_read_only_when_asked(engine_client: Any, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("host\n")
    factory = DockerSandboxFactory(
        Settings(data_dir=tmp_path, docker_allowed_mounts=[str(tmp_path)])
    )
    req = request(mounts=[{"source": str(tmp_path), "target": "/data", "read_only": True}])
    sandbox = factory.open(req)
    assert output(sandbox, "cat /data/in.txt") == ["host"]
    assert sandbox.exec("touch /data/new 2>/dev/null").exit_code != 0
    sandbox.close()
    factory.cleanup_run(req.run_id)


def test_copy_in_and_out_of_a_file_and_a_directory(
    factory: DockerSandboxFactory, tmp_path: Path
) -> None:
    sandbox = factory.open(request())
    (tmp_path / "one.txt").write_text("one\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "two.txt").write_text("two\n")
    sandbox.copy_in(tmp_path / "one.txt", "in/one.txt")
    sandbox.copy_in(tree, "/workspace/in/tree")
    assert output(sandbox, "cat in/one.txt in/tree/sub/two.txt") == ["one", "two"]
    sandbox.copy_out("in/one.txt", tmp_path / "out" / "one.txt")
    sandbox.copy_out("/workspace/in/tree", tmp_path / "out" / "tree")
    assert (tmp_path / "out" / "one.txt").read_text() == "one\n"
    assert (tmp_path / "out" / "tree" / "sub" / "two.txt").read_text() == "two\n"
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.copy_out("nothing.txt", tmp_path / "x")
    with pytest.raises(SandboxError, match="outside the workspace"):
        sandbox.copy_in(tmp_path / "one.txt", "/etc/one.txt")
    sandbox.close()


def test_copy_out_refuses_a_link_that_points_outside(
    factory: DockerSandboxFactory, tmp_path: Path
) -> None:
    sandbox = factory.open(request())
    sandbox.exec("mkdir d && ln -s /etc/passwd d/link")
    with pytest.raises(SandboxError, match="links outside"):
        sandbox.copy_out("d", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    sandbox.close()


def _tar(tmp_path: Path, name: str, *, size: int = 3, kind: bytes = tarfile.REGTYPE) -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo(name)
        member.type = kind
        member.size = size if kind == tarfile.REGTYPE else 0
        tar.addfile(member, io.BytesIO(b"x" * member.size))
    return path


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("d/../../escape", tarfile.REGTYPE, "points outside"),
        ("/etc/escape", tarfile.REGTYPE, "points outside"),
        ("d/dev", tarfile.CHRTYPE, "device or pipe"),
    ],
)
def test_extraction_refuses_what_would_escape(
    tmp_path: Path, name: str, kind: bytes, reason: str
) -> None:
    with pytest.raises(SandboxError, match=reason):
        unpack(_tar(tmp_path, name, kind=kind), tmp_path / "out" / "d")
    assert not (tmp_path / "escape").exists()


def test_extraction_stops_at_the_size_cap(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="limit"):
        unpack(_tar(tmp_path, "big", size=2048), tmp_path / "out", limit=1024)


def test_close_and_cleanup_leave_nothing_behind_and_are_safe_twice(
    factory: DockerSandboxFactory, engine_client: Any
) -> None:
    req = request()
    sandbox = factory.open(req)
    assert count(engine_client, req.run_id) == (1, 1)
    sandbox.close()
    sandbox.close()
    # The container goes in the background: the next step need not wait for it.
    eventually(lambda: count(engine_client, req.run_id) == (0, 1), 10, "container removed")
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true")
    factory.cleanup_run(req.run_id)
    factory.cleanup_run(req.run_id)
    assert count(engine_client, req.run_id) == (0, 0)
    assert not (factory.settings.workspace_root / req.run_id).exists()


def test_cleanup_waits_for_removals_under_way(
    factory: DockerSandboxFactory, engine_client: Any
) -> None:
    # Given steps whose containers were closed a moment ago
    req = request()
    for _ in range(3):
        factory.open(req).close()
    # When the run is cleaned up at once, Then nothing of it is left
    factory.cleanup_run(req.run_id)
    assert count(engine_client, req.run_id) == (0, 0)


def test_the_workspace_is_the_runs_directory_on_this_host(
    factory: DockerSandboxFactory, settings: Settings
) -> None:
    # Given a file put in the run's directory on the host (as a local step would)
    req = request()
    host = settings.workspace_root / req.run_id
    host.mkdir(parents=True)
    (host / "from-host.txt").write_text("host\n")
    sandbox = factory.open(req)
    # When a container step reads it and writes one of its own
    assert output(sandbox, "cat from-host.txt; echo container > from-container.txt") == ["host"]
    sandbox.close()
    # Then the host sees the container's file too
    assert (host / "from-container.txt").read_text() == "container\n"


def test_files_the_worker_may_not_delete_go_through_a_container(
    factory: DockerSandboxFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a workspace holding files a container made as root
    req = request()
    sandbox = factory.open(req)
    sandbox.exec("mkdir -p deep/er && echo x > deep/er/file && touch .hidden")
    sandbox.close()
    host = settings.workspace_root / req.run_id
    # And a worker not allowed to delete them (as when it does not run as root)
    real_rmtree = shutil.rmtree
    denied: list[Path] = []

    def rmtree(path: Path, *args: Any, **kwargs: Any) -> None:
        if not denied and Path(path) == host:
            denied.append(Path(path))
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr("conveyor.providers.docker.sandbox.shutil.rmtree", rmtree)
    # When the run is cleaned up, Then a container deleted them and nothing is left
    factory.cleanup_run(req.run_id)
    assert denied == [host]
    assert not host.exists()


def test_a_missing_image_gets_a_one_line_reason(factory: DockerSandboxFactory) -> None:
    with pytest.raises(SandboxError) as caught:
        factory.open(request(image="conveyor-test/no-such-image:1"))
    assert str(caught.value) == (
        "image conveyor-test/no-such-image:1 is not on this Docker engine (build or pull it first)"
    )


def test_an_unreachable_engine_gets_a_one_line_reason(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(SandboxError, match=r"^the Docker engine is unreachable: ") as caught:
        DockerSandboxFactory(settings).open(request())
    assert "\n" not in str(caught.value)


def test_an_out_of_memory_kill_gets_a_one_line_reason(factory: DockerSandboxFactory) -> None:
    sandbox = factory.open(request(memory_limit="32m"))
    with pytest.raises(SandboxError, match=r"^killed: out of memory \(memory_limit 32m\)$"):
        sandbox.exec("head -c 200m /dev/zero | tail")
    # a kill that is not the OOM killer's stays an exit code
    assert sandbox.exec("kill -9 $$").exit_code == 137
    sandbox.close()


def test_a_pipeline_runs_shell_steps_in_busybox(engine_client: Any, settings: Settings) -> None:
    # Given two steps in busybox: the first writes a file and an output
    text = pipeline(
        f"""
        - name: make
          type: step.shell_exec
          config:
            image: {BUSYBOX}
            commands:
              - echo built > /workspace/made.txt
              - echo "greeting=hello" >> "$CONVEYOR_OUTPUT"
        - name: use
          type: step.shell_exec
          needs: [make]
          config:
            image: {BUSYBOX}
            commands:
              - cat made.txt
              - echo "seen=$(cat made.txt)-{{{{ .steps.make.greeting }}}}" >> "$CONVEYOR_OUTPUT"
        """
    )
    # When the embedded engine runs it
    with open_engine(settings) as engine:
        record = run(
            engine,
            text,
        )
        # Then the second step saw the first one's file and output
        assert record.status.value == "succeeded", log_text(engine, record.id)
        assert step(engine, record.id, "use").outputs["seen"] == "built-hello"
        assert "built" in log_text(engine, record.id, "use")
    assert count(engine_client, record.id) == (0, 0)


def test_an_image_with_an_entrypoint_still_runs_commands(
    engine_client: Any, factory: DockerSandboxFactory, tmp_path: Path
) -> None:
    """Given a tool image whose ENTRYPOINT exits at once (as scanner images' tools do)
    When a step opens a sandbox on it
    Then its commands run in the shell as in any other image."""
    (tmp_path / "Dockerfile").write_text('FROM conveyor-test/busybox\nENTRYPOINT ["false"]\n')
    image, _ = engine_client.images.build(path=str(tmp_path), tag="conveyor-test/entrypoint:1")
    ask = request(image="conveyor-test/entrypoint:1")
    try:
        sandbox = factory.open(ask)
        assert output(sandbox, "echo ran") == ["ran"]
        sandbox.close()
    finally:
        factory.cleanup_run(ask.run_id)  # waits for the container's removal
        engine_client.images.remove(image.id, force=True)
