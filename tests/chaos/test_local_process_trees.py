"""A local step's whole process tree ends with it, however its processes detached.

Each test starts a process with ``setsid`` (a new session: out of the step's process
group), which writes its pid to a file, then ends the step the way a user or a bad
day would: cancel, timeout, the shell exiting, the sandbox closed, the worker killed.
The pid must be gone within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepTimeout
from conveyor.providers.local import LocalSandboxFactory
from tests.chaos.process_kit import alive, detached, read_pid, reap, sandbox_request, wait_gone

pytestmark = pytest.mark.timeout(120)


def test_cancel_kills_a_process_started_with_setsid(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command that starts a detached sleeper and waits
    pidfile = tmp_path / "pid"
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    threading.Thread(target=lambda: (read_pid(pidfile), cancel.set()), daemon=True).start()
    # When the step is cancelled
    with pytest.raises(StepCancelled):
        sandbox.exec(f"{detached(pidfile)} sleep 1000")
    pid = read_pid(pidfile)
    # Then the detached process is gone too
    try:
        assert wait_gone(pid), f"process {pid} started with setsid survived the cancel"
    finally:
        reap(pid)


def test_timeout_kills_a_process_started_with_setsid(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request(deadline=time.monotonic() + 2))
    with pytest.raises(StepTimeout):
        sandbox.exec(f"{detached(pidfile)} sleep 1000")
    pid = read_pid(pidfile)
    try:
        assert wait_gone(pid), f"process {pid} started with setsid survived the timeout"
    finally:
        reap(pid)


def test_a_detached_process_does_not_outlive_its_command(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command that leaves a detached sleeper behind and exits at once
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    result = sandbox.exec(f"{detached(pidfile)} while [ ! -s {pidfile} ]; do sleep 0.05; done")
    pid = read_pid(pidfile)
    # Then the command succeeded, and what it left is gone
    try:
        assert result.exit_code == 0
        assert wait_gone(pid), f"process {pid} outlived the command that started it"
    finally:
        reap(pid)


def test_a_double_fork_orphan_is_killed_on_cancel(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a grandchild whose parent exited (reparented away from the shell) in a new
    # session, ignoring SIGTERM
    pidfile = tmp_path / "pid"
    script = (
        f"(setsid sh -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 1; done' &) ; "
        "sleep 1000"
    )
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    threading.Thread(target=lambda: (read_pid(pidfile), cancel.set()), daemon=True).start()
    with pytest.raises(StepCancelled):
        sandbox.exec(script)
    pid = read_pid(pidfile)
    try:
        assert wait_gone(pid), f"orphan {pid} that ignores SIGTERM survived the cancel"
    finally:
        reap(pid)


def test_closing_the_sandbox_kills_the_tree_of_a_running_command(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command running in another thread with a detached sleeper
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sandbox.exec(f"{detached(pidfile)} sleep 1000")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pid = read_pid(pidfile)
    # When the sandbox is closed under it (what an attempt that lost its lease does)
    sandbox.close()
    thread.join(15)
    # Then the command stopped with an error, and the detached process is gone
    try:
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], SandboxError)
        assert wait_gone(pid), f"process {pid} survived the sandbox's close"
    finally:
        reap(pid)


WORKER = """
import sys, threading
from pathlib import Path
from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalSandboxFactory

factory = LocalSandboxFactory(Settings(data_dir=Path(sys.argv[1])))
request = SandboxRequest("run-1", "build", SandboxConfig(), threading.Event(), None)
factory.open(request).exec(sys.argv[2])
"""


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "pool-thread"])
def test_a_step_dies_with_its_worker_killed_by_sigkill(tmp_path: Path, thread: bool) -> None:
    # Given a worker process running a long command, one of whose processes detached
    shell_pid, setsid_pid = tmp_path / "shell.pid", tmp_path / "setsid.pid"
    script = f"echo $$ > {shell_pid}; {detached(setsid_pid)} sleep 1000"
    code = WORKER
    if thread:  # steps run on worker threads (the embedded engine's pool)
        code = code.replace(
            "factory.open(request).exec(sys.argv[2])",
            "t = threading.Thread(target=lambda: factory.open(request).exec(sys.argv[2]))\n"
            "t.start(); t.join()",
        )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "data"), script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    pids = [read_pid(shell_pid), read_pid(setsid_pid)]
    try:
        assert all(alive(pid) for pid in pids)
        # When the worker is killed with SIGKILL, nothing of it left to clean up
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        # Then the step's shell and the process it detached are gone within seconds
        for pid in pids:
            assert wait_gone(pid), f"process {pid} outlived its worker"
    finally:
        reap(worker.pid, *pids)
