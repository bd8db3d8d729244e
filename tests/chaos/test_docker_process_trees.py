"""A Docker step's processes end with it, however they detached, and with its worker.

Processes in a container live in its PID namespace; this machine's engine shares the
kernel, so they are visible in /proc here, found by a sleep of a unique length. A
process started with ``setsid`` inside the container must be gone after a cancel, a
timeout and the death (SIGKILL) of the worker process that started the container.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest
from conveyor.orchestrator.errors import StepCancelled, StepTimeout
from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker import RUN_LABEL, DockerSandboxFactory
from tests.chaos.process_kit import reap, wait_gone
from tests.conftest import missing

BUSYBOX = "conveyor-test/busybox"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine_client() -> Any:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(BUSYBOX)
    except Exception as exc:
        missing("Docker engine and base image", f"{exc} (scripts/docker-engine, base-images)")
    return client


@pytest.fixture
def run_id(engine_client: Any, settings: Settings) -> Iterator[str]:
    """A run id whose containers, volume and workspace go afterwards."""
    found = f"t{uuid.uuid4().hex[:10]}"
    yield found
    gone_within(engine_client, found, 30)  # removals other factories began
    DockerSandboxFactory(settings).cleanup_run(found)


def gone_within(client: Any, run_id: str, seconds: float) -> bool:
    """True once no container of the run is left (running or not)."""
    until = time.monotonic() + seconds
    while containers(client, run_id):
        if time.monotonic() > until:
            return False
        time.sleep(0.2)
    return True


def _seconds() -> int:
    """A sleep length no other process on this machine is likely to use."""
    return random.randint(10_000_000, 99_999_999)


def host_pids(seconds: int) -> list[int]:
    """Pids (in this machine's namespace) of ``sleep SECONDS`` processes."""
    wanted = f"sleep\0{seconds}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if wanted in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_pids(seconds: int, within: float = 60.0) -> list[int]:
    until = time.monotonic() + within
    while time.monotonic() < until:
        if pids := host_pids(seconds):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"no `sleep {seconds}` process appeared within {within}s")


def containers(client: Any, run_id: str) -> list[Any]:
    return list(client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}))


def _request(run_id: str, cancel: threading.Event, deadline: float | None = None) -> SandboxRequest:
    config = SandboxConfig(image=BUSYBOX)
    return SandboxRequest(run_id, "s", config, cancel, deadline)


def test_cancel_kills_a_detached_process_in_the_container(
    engine_client: Any, settings: Settings, run_id: str
) -> None:
    inner, outer = _seconds(), _seconds()
    cancel = threading.Event()
    sandbox = DockerSandboxFactory(settings).open(_request(run_id, cancel))
    pids: list[int] = []

    def cancel_once_started() -> None:
        pids.extend(wait_pids(inner) + wait_pids(outer))
        cancel.set()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    try:
        with pytest.raises(StepCancelled):
            sandbox.exec(f"setsid sleep {inner} & sleep {outer}")
        sandbox.close()
        assert pids
        for pid in pids:
            assert wait_gone(pid, within=20), f"process {pid} in the container survived cancel"
    finally:
        reap(*host_pids(inner), *host_pids(outer))


def test_timeout_kills_a_detached_process_in_the_container(
    engine_client: Any, settings: Settings, run_id: str
) -> None:
    inner = _seconds()
    sandbox = DockerSandboxFactory(settings).open(
        _request(run_id, threading.Event(), time.monotonic() + 8)
    )
    try:
        with pytest.raises(StepTimeout):
            sandbox.exec(f"setsid sleep {inner} & sleep 1000")
        sandbox.close()
        for pid in wait_pids(inner, within=1) if host_pids(inner) else []:
            assert wait_gone(pid, within=20), f"process {pid} in the container survived timeout"
        assert not host_pids(inner)
    finally:
        reap(*host_pids(inner))


WORKER = """
import sys, threading
from pathlib import Path
from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest
from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker import DockerSandboxFactory

factory = DockerSandboxFactory(Settings(data_dir=Path(sys.argv[1])))
config = SandboxConfig(image=sys.argv[2])
request = SandboxRequest(sys.argv[3], "s", config, threading.Event(), None)
factory.open(request).exec(sys.argv[4])
"""


def test_the_container_of_a_worker_killed_by_sigkill_is_removed(
    engine_client: Any, settings: Settings, run_id: str
) -> None:
    # Given a worker process running a long command in a container, part of it detached
    inner, outer = _seconds(), _seconds()
    script = f"setsid sleep {inner} & sleep {outer}"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(settings.data_dir), BUSYBOX, run_id, script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        pids = wait_pids(inner) + wait_pids(outer)
        assert len(containers(engine_client, run_id)) == 1
        # When the worker is killed with SIGKILL, its process group and all
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        # Then the container is removed and every process in it is gone within seconds
        for pid in pids:
            assert wait_gone(pid, within=20), f"process {pid} outlived its worker"
        assert gone_within(engine_client, run_id, 20), containers(engine_client, run_id)
    finally:
        reap(*host_pids(inner), *host_pids(outer))


def test_a_new_attempt_removes_the_container_an_earlier_one_left(
    engine_client: Any, settings: Settings, run_id: str
) -> None:
    # Given a container of the step left running by an attempt whose watchdog is gone too
    outer = _seconds()
    old = DockerSandboxFactory(settings).open(_request(run_id, threading.Event()))
    exec_id = engine_client.api.exec_create(old._id, ["sleep", str(outer)])["Id"]
    engine_client.api.exec_start(exec_id, detach=True)
    watchdog = getattr(old, "_watchdog", None)
    if watchdog is not None:
        watchdog.kill()  # as if the whole host went away, watchdog and all
    pids = wait_pids(outer)
    try:
        # When a new attempt of the step opens its sandbox (in another process)
        new = DockerSandboxFactory(settings).open(_request(run_id, threading.Event()))
        # Then the earlier container and what ran in it are gone; the new one runs
        for pid in pids:
            assert wait_gone(pid, within=20), f"process {pid} of the earlier attempt survived"
        assert [c["Id"] for c in containers(engine_client, run_id)] == [new._id]
        new.close()
    finally:
        reap(*host_pids(outer))
