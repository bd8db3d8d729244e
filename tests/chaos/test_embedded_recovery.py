"""``conveyor run`` killed with SIGKILL: its run must not stay ``running`` for ever.

A real ``conveyor run`` process runs a long step (which also starts a detached
process) and is killed with SIGKILL. Its step processes must die with it, and the
next ``conveyor`` command that opens the local store must find the run abandoned:
its running step failed as lost, the rest cancelled, the run failed, its workspace
removed. ``conveyor cancel`` of such a run leaves no step ``running`` either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.chaos.process_kit import detached, read_pid, reap, wait_gone
from tests.integration.clirun import Cli
from tests.unit.engine_kit import eventually

pytestmark = pytest.mark.timeout(180)


def _pipeline(tmp_path: Path) -> tuple[str, Path, Path]:
    shell_pid, setsid_pid = tmp_path / "shell.pid", tmp_path / "setsid.pid"
    command = f"echo $$ > {shell_pid}; {detached(setsid_pid)} sleep 1000"
    text = (
        "pipelines:\n  p:\n    steps:\n"
        "      - name: long\n        type: step.shell_exec\n"
        f"        config: {{commands: [{json.dumps(command)}]}}\n"
        "      - name: after\n        type: step.shell_exec\n        needs: [long]\n"
        "        config: {commands: ['true']}\n"
        "      - name: aside\n        type: step.shell_exec\n        needs: [long]\n"
        "        config: {commands: ['true']}\n"
    )
    return text, shell_pid, setsid_pid


def _killed_run(cli: Cli, tmp_path: Path) -> tuple[str, list[int]]:
    """Start ``conveyor run``, wait for its step's processes, SIGKILL it; the run's id."""
    text, shell_pid, setsid_pid = _pipeline(tmp_path)
    cli.write("p.yaml", text)
    proc: subprocess.Popen[str] = cli.start("run", "p.yaml")
    pids = [read_pid(shell_pid, within=60), read_pid(setsid_pid, within=60)]
    with cli.store() as store:
        (run,) = store.list_runs()
    assert run.status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return run.id, pids


def test_the_steps_of_a_killed_conveyor_run_die_and_its_run_fails_as_lost(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "w")
    run_id, pids = _killed_run(cli, tmp_path)
    try:
        # Then its step's processes, the detached one too, die with it
        for pid in pids:
            assert wait_gone(pid), f"process {pid} outlived its conveyor run"
        assert (cli.data_dir / "workspaces" / run_id).exists()
        # When the next conveyor command opens the local store
        listed = cli("runs")
        assert listed.code == 0, listed.output
        # Then the run failed, its running step failed as lost, the others cancelled
        with cli.store() as store:
            run = store.get_run(run_id)
            steps = {s.key: s for s in store.list_steps(run_id)}
        assert run.status == "failed"
        assert "ended before the run did" in (run.error or "")
        assert steps["long"].status == "failed"
        assert "lost its worker" in (steps["long"].last_error or "")
        assert {steps["after"].status, steps["aside"].status} == {"cancelled"}
        # And `conveyor show` says so, and the workspace is gone
        shown = cli("show", run_id, "--json")
        assert json.loads(shown.stdout)["status"] == "failed", shown.output
        assert not (cli.data_dir / "workspaces" / run_id).exists()
    finally:
        reap(*pids)


def test_cancel_of_a_run_whose_conveyor_run_was_killed_leaves_no_step_running(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "w")
    run_id, pids = _killed_run(cli, tmp_path)
    try:
        # When the user cancels the run its dead process left
        cli("cancel", run_id)
        # Then no step of it is running, and the run is over
        with cli.store() as store:
            run = store.get_run(run_id)
            statuses = {s.key: s.status.value for s in store.list_steps(run_id)}
        assert run.status.terminal, run
        assert "running" not in statuses.values(), statuses
        assert "queued" not in statuses.values(), statuses
        for pid in pids:
            assert wait_gone(pid), f"process {pid} outlived its conveyor run"
    finally:
        reap(*pids)


def test_a_live_conveyor_run_is_left_alone_by_other_commands(tmp_path: Path) -> None:
    # Given a conveyor run still running its step
    cli = Cli(tmp_path / "w")
    text, shell_pid, setsid_pid = _pipeline(tmp_path)
    cli.write("p.yaml", text)
    proc = cli.start("run", "p.yaml")
    pids = [read_pid(shell_pid, within=60), read_pid(setsid_pid, within=60)]
    try:
        with cli.store() as store:
            (run,) = store.list_runs()
        # When other commands open the store, a second `conveyor run` included
        assert cli("runs").code == 0
        cli.write(
            "quick.yaml",
            "pipelines:\n  q:\n    steps:\n      - {name: a, type: step.log, "
            "config: {message: hi}}\n",
        )
        assert cli("run", "quick.yaml", timeout=60).code == 0
        # Then the live run is untouched: still running, its step still running
        with cli.store() as store:
            assert store.get_run(run.id).status == "running"
            long = next(s for s in store.list_steps(run.id) if s.key == "long")
        assert long.status == "running"
        eventually(lambda: all(os.path.exists(f"/proc/{p}") for p in pids), 1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        reap(*pids)
