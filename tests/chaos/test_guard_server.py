"""One guard server per worker process starts every local command; it fails safe.

A worker starts its guard server on first use and keeps it: many commands in a row use
the same one. A server that was killed is replaced by the next command, and the
commands it was guarding lose their whole tree rather than run on unwatched. When the
worker dies, every command it was running ends with every process it started, and a
process forked from a worker (a prefork pool) gets a server of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conveyor.providers.local import LocalSandboxFactory
from conveyor.providers.local.guard_client import server_pid
from tests.chaos.process_kit import alive, detached, read_pid, reap, sandbox_request, wait_gone

pytestmark = pytest.mark.timeout(120)


def test_many_commands_in_a_row_use_one_guard_server(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(sandbox_request())
    sandbox.exec("true")
    first = server_pid()
    codes = [sandbox.exec(f"exit {i % 3}").exit_code for i in range(30)]
    assert codes == [i % 3 for i in range(30)]
    assert first is not None and server_pid() == first


def test_the_server_outlives_the_thread_that_started_it(factory: LocalSandboxFactory) -> None:
    # Given a server started from a thread that then ended (as a pool's threads may)
    reap_server()
    sandbox = factory.open(sandbox_request())
    thread = threading.Thread(target=lambda: sandbox.exec("true"))
    thread.start()
    thread.join()
    started = server_pid()
    # Then it still runs commands, and it is the same server
    assert sandbox.exec("echo still here").tail == ["still here"]
    assert started is not None and server_pid() == started


def test_a_killed_server_is_replaced_by_the_next_command(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(sandbox_request())
    sandbox.exec("true")
    killed = reap_server()
    result = sandbox.exec("echo again")
    assert result.exit_code == 0 and result.tail == ["again"]
    assert server_pid() not in (None, killed)


def test_a_command_whose_server_is_killed_loses_its_tree(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a running command with a detached sleeper
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(sandbox.exec(f"{detached(pidfile)} sleep 1000").exit_code)
    )
    thread.start()
    pid = read_pid(pidfile)
    # When its guard server is killed
    reap_server()
    thread.join(30)
    # Then the command failed, its tree is gone, and the next command runs
    try:
        assert not thread.is_alive()
        assert results and results[0] != 0
        assert wait_gone(pid), f"process {pid} outlived its guard server"
        assert sandbox.exec("true").exit_code == 0
    finally:
        reap(pid)


def test_a_step_that_stops_the_server_does_not_stop_the_next(
    factory: LocalSandboxFactory,
) -> None:
    # Given a step that stopped the guard server (its guard's parent) with SIGSTOP
    sandbox = factory.open(sandbox_request())
    stop = "read -r _ _ _ server _ < /proc/$PPID/stat; kill -STOP $server"
    assert sandbox.exec(stop).exit_code == 0
    # Then the next command still runs, and as many as follow
    assert sandbox.exec("echo next").tail == ["next"]
    assert sandbox.exec("echo and next").tail == ["and next"]


WORKER = """
import os, sys, threading, time
from pathlib import Path
from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalSandboxFactory
from conveyor.providers.local.guard_client import server_pid

factory = LocalSandboxFactory(Settings(data_dir=Path(sys.argv[1])))

def run(script):
    request = SandboxRequest("run-1", "build", SandboxConfig(), threading.Event(), None)
    factory.open(request).exec(script)

run("true")
if sys.argv[2] == "fork":  # a forked child (a prefork pool's) gets a server of its own
    child = os.fork()
    if child == 0:
        run("true")
        Path(sys.argv[1], "child.server").write_text(str(server_pid()))
        os._exit(0)
    os.waitpid(child, 0)
Path(sys.argv[1], "server").write_text(str(server_pid()))
threads = [threading.Thread(target=run, args=(script,)) for script in sys.argv[3:]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


@pytest.mark.parametrize("fork", [False, True], ids=["worker", "forked-worker"])
def test_every_running_command_dies_with_its_worker(tmp_path: Path, fork: bool) -> None:
    # Given a worker running three commands at once, each with a detached sleeper
    pidfiles = [tmp_path / f"{i}.pid" for i in range(3)]
    scripts = [f"{detached(pidfile)} sleep 1000" for pidfile in pidfiles]
    data = tmp_path / "data"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data), "fork" if fork else "-", *scripts],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    pids = [read_pid(pidfile) for pidfile in pidfiles]
    server = read_pid(data / "server")
    try:
        assert all(alive(pid) for pid in [*pids, server])
        if fork:  # the child used a server of its own, now gone with it
            assert read_pid(data / "child.server") != server
        # When the worker is killed with SIGKILL
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        # Then every command's tree is gone, and the server with them
        for pid in [*pids, server]:
            assert wait_gone(pid), f"process {pid} outlived its worker"
    finally:
        reap(worker.pid, server, *pids)


def reap_server() -> int | None:
    """Kill this process's guard server, if one runs; its pid."""
    pid = server_pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid)
    return pid
