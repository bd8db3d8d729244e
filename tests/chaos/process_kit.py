"""Helpers of the fault tests that follow processes: pid files, liveness, bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest

#: A process that should be gone is given this long (a loaded two-core machine).
GONE_WITHIN = 10.0

#: A shell fragment that starts a detached process (new session, out of the process
#: group) which writes its own pid to "$1" and then sleeps for a long time.
DETACHED = "setsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' {pidfile} &"


def detached(pidfile: Path) -> str:
    """A command fragment that starts a ``setsid`` sleeper writing its pid to ``pidfile``."""
    return DETACHED.format(pidfile=pidfile)


def alive(pid: int) -> bool:
    """True while ``pid`` is a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] not in (b"Z", b"X")


def read_pid(path: Path, within: float = 30.0) -> int:
    """The pid written to ``path``, once it is there."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text:
                return int(text.splitlines()[-1])
        time.sleep(0.05)
    raise AssertionError(f"{path} got no pid within {within}s")


def wait_gone(pid: int, within: float = GONE_WITHIN) -> bool:
    """True once ``pid`` is gone, False if it still runs after ``within`` seconds."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def reap(*pids: int) -> None:
    """Kill what a failing test left behind, so it does not outlive the session."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sandbox_request(
    cancel: threading.Event | None = None, deadline: float | None = None
) -> SandboxRequest:
    """A request for a sandbox of step ``build`` of run ``run-1``, default config."""
    return SandboxRequest("run-1", "build", SandboxConfig(), cancel or threading.Event(), deadline)
