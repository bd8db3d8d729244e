"""A local step's tree ends with it in the odd cases too: background sleepers, fork
storms, processes that ignore SIGTERM, closed output, renamed processes, a guard killed
by its own step.

Each test runs a real command in the local sandbox and checks two things: the step ends
within its bound, and no process it started is left.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conveyor.orchestrator.errors import StepCancelled, StepTimeout
from conveyor.providers.local import LocalSandboxFactory
from conveyor.providers.local.sandbox import GUARD_STUCK, TERM_GRACE
from tests.chaos.process_kit import GONE_WITHIN, read_pid, reap, sandbox_request, wait_gone

pytestmark = pytest.mark.timeout(120)


def _cancel_once(pidfile: Path, cancel: threading.Event, after: float = 0.0) -> None:
    def go() -> None:
        read_pid(pidfile)
        time.sleep(after)
        cancel.set()

    threading.Thread(target=go, daemon=True).start()


def _all_gone(pidfile: Path) -> list[int]:
    """The pids listed in ``pidfile`` that are still alive after the usual wait."""
    pids = [int(line) for line in pidfile.read_text().split() if line.strip()]
    left = [pid for pid in pids if not wait_gone(pid)]
    reap(*left)
    return left


def test_a_nohup_sleeper_ends_with_a_command_that_exits_zero(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    started = time.monotonic()
    result = sandbox.exec(
        f"nohup sh -c 'echo $$ > {pidfile}; exec sleep 1000' >/dev/null 2>&1 &"
        f" while [ ! -s {pidfile} ]; do sleep 0.05; done; echo done"
    )
    took = time.monotonic() - started
    assert result.exit_code == 0
    assert "done" in result.tail
    assert took < TERM_GRACE + 5, f"the step took {took:.1f}s to end"
    assert not _all_gone(pidfile)


def test_a_nohup_sleeper_holding_the_output_ends_with_its_command(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    started = time.monotonic()
    result = sandbox.exec(
        f"nohup sh -c 'echo $$ > {pidfile}; exec sleep 1000' &"
        f" while [ ! -s {pidfile} ]; do sleep 0.05; done"
    )
    took = time.monotonic() - started
    assert result.exit_code == 0
    assert took < TERM_GRACE + 5, f"the step took {took:.1f}s to end"
    assert not _all_gone(pidfile)


def test_a_fork_storm_is_stopped_by_cancel(factory: LocalSandboxFactory, tmp_path: Path) -> None:
    # Given a command that forks short-lived children as fast as it can (each writes
    # its pid), in a new session
    pidfile = tmp_path / "pid"
    script = (
        f"setsid sh -c 'i=0; while [ $i -lt 100000 ]; do (echo $$ >> {pidfile}; sleep 0.2) & "
        "i=$((i+1)); done; wait' & sleep 1000"
    )
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    _cancel_once(pidfile, cancel, after=1.0)
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        sandbox.exec(script)
    took = time.monotonic() - started
    assert took < 1 + TERM_GRACE + GONE_WITHIN, f"cancel took {took:.1f}s"
    time.sleep(0.5)
    assert not _all_gone(pidfile)


def test_a_tree_that_ignores_sigterm_is_killed_within_timeout_and_grace(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    script = (
        f"trap '' TERM; echo $$ >> {pidfile}; "
        f"setsid sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; while :; do sleep 1; done' & "
        f"sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; while :; do sleep 1; done' & "
        "while :; do sleep 1; done"
    )
    timeout = 2.0
    sandbox = factory.open(sandbox_request(deadline=time.monotonic() + timeout))
    started = time.monotonic()
    with pytest.raises(StepTimeout):
        sandbox.exec(script)
    took = time.monotonic() - started
    assert took < timeout + TERM_GRACE + 3, f"timed out after {took:.1f}s"
    assert len(pidfile.read_text().split()) == 3
    assert not _all_gone(pidfile)


def test_a_command_that_closes_its_output_is_cancelled(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    _cancel_once(pidfile, cancel)
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        sandbox.exec(f"echo before; exec >&- 2>&-; echo $$ > {pidfile}; sleep 1000")
    took = time.monotonic() - started
    assert took < TERM_GRACE + 5, f"cancel took {took:.1f}s"
    assert not _all_gone(pidfile)


def test_a_command_that_closes_its_output_and_exits_leaves_nothing(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    sandbox = factory.open(sandbox_request())
    started = time.monotonic()
    result = sandbox.exec(
        f"exec >&- 2>&-; sh -c 'echo $$ > {pidfile}; exec sleep 1000' & "
        f"while [ ! -s {pidfile} ]; do sleep 0.05; done; exit 3"
    )
    took = time.monotonic() - started
    assert result.exit_code == 3
    assert took < TERM_GRACE + 5
    assert not _all_gone(pidfile)


def test_a_renamed_double_forked_setsid_process_is_killed_on_cancel(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a process renamed (exec -a, and its comm changed) in a new session, whose
    # parent exited
    pidfile = tmp_path / "pid"
    script = (
        '( ( setsid bash -c \'echo $$ > "$0"; printf kworker > /proc/self/comm; '
        'exec -a "[kworker/0:1]" sleep 1000\' '
        f"{pidfile} & ) & ) ; sleep 1000"
    )
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    _cancel_once(pidfile, cancel, after=0.3)
    with pytest.raises(StepCancelled):
        sandbox.exec(script)
    assert not _all_gone(pidfile)


def test_a_step_that_kills_its_guard_leaves_nothing(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command that detaches a sleeper, then kills its guard (its parent) by SIGKILL
    pidfile = tmp_path / "pid"
    script = (
        f"setsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' {pidfile} & "
        f"while [ ! -s {pidfile} ]; do sleep 0.05; done; kill -9 $PPID; sleep 1000"
    )
    sandbox = factory.open(sandbox_request())
    started = time.monotonic()
    result = sandbox.exec(script)
    took = time.monotonic() - started
    assert took < TERM_GRACE + 5 + GONE_WITHIN, f"the step took {took:.1f}s to end"
    assert result.exit_code != 0  # its guard was killed: the step failed
    assert not _all_gone(pidfile)


def test_a_step_that_stops_its_guard_is_still_cancelled(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command that detaches a sleeper, then stops its guard (SIGSTOP)
    pidfile = tmp_path / "pid"
    script = (
        f"setsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' {pidfile} & "
        f"while [ ! -s {pidfile} ]; do sleep 0.05; done; kill -STOP $PPID; sleep 1000"
    )
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    _cancel_once(pidfile, cancel, after=0.3)
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        sandbox.exec(script)
    took = time.monotonic() - started
    assert took < TERM_GRACE + 5 + GONE_WITHIN, f"the cancel took {took:.1f}s"
    assert not _all_gone(pidfile)


def test_a_step_that_keeps_stopping_its_guard_is_still_cancelled(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a command whose detached helper stops the guard again and again
    pidfile = tmp_path / "pid"
    script = (
        f'guard=$PPID; setsid sh -c \'echo $$ >> "$0"; while :; do kill -STOP $1; '
        f"sleep 0.01; done' {pidfile} $guard & "
        f"while [ ! -s {pidfile} ]; do sleep 0.05; done; sleep 1000"
    )
    cancel = threading.Event()
    sandbox = factory.open(sandbox_request(cancel))
    _cancel_once(pidfile, cancel, after=0.3)
    started = time.monotonic()
    with pytest.raises(StepCancelled):
        sandbox.exec(script)
    took = time.monotonic() - started
    assert took < TERM_GRACE + GUARD_STUCK + TERM_GRACE + 5, f"the cancel took {took:.1f}s"
    assert not _all_gone(pidfile)
