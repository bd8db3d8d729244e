"""The worker's side of the guard server: one server per process, started on first use.

``spawn`` asks the server (``guard_server.py``) to start a command under a guard of its
own and returns a ``Guarded``: what the sandbox needs of a child process (its pid, its
output, its exit status), though the guard is the server's child, not ours.

The server is started by a thread of its own that lives as long as the process:
``PR_SET_PDEATHSIG`` fires when the *thread* that started a process ends, and a pool
thread may end long before the worker does. A server that died (killed, crashed) is
started again by the next ``spawn``; a process forked from this one (Celery's prefork
pool) forgets its parent's server, closing its ends of the lifeline and the socket so
that the parent's death is still seen, and starts its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from conveyor.orchestrator.errors import SandboxError

SERVER = str(Path(__file__).with_name("guard_server.py"))
#: How long a server that does not answer (stopped, stuck) has before it is killed.
SERVER_PATIENCE = 10.0


class Guarded:
    """A command's guard, started by the server: the parts of ``Popen`` the sandbox uses.

    ``exit_fd`` turns readable once the guard has exited (as a pidfd would): the guard
    writes its exit code there as it leaves, or the server the signal that killed it.
    The pid comes on a pipe of its own, read when first needed, so the worker goes on
    to read the command's output while the server forks.
    """

    def __init__(self, output: int, pid: int, status: int, server: _Server) -> None:
        self.stdout = open(output, "rb", buffering=0)  # noqa: SIM115  (closed by its owner)
        self.exit_fd = status
        self.returncode: int | None = None
        self._pid_fd = pid
        self._pid: int | None = None
        self._server = server
        self._lock = threading.Lock()  # close() asks from another thread than exec()

    @property
    def pid(self) -> int | None:
        """The guard's pid; None if the server died before it could tell."""
        with self._lock:
            if self._pid_fd >= 0:
                self._server.wait_for(self._pid_fd)
                line = _read_all(self._pid_fd)
                os.close(self._pid_fd)
                self._pid_fd = -1
                self._pid = int(line) if line else None
            return self._pid

    def wait(self, timeout: float | None = None) -> int:
        """The guard's exit code (``-N``: killed by signal N), waiting up to ``timeout``."""
        if self.returncode is None:
            ready, _, _ = select.select([self.exit_fd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(SERVER, timeout or 0.0)
            # End of file with no code: the server died, and with it the guard (its
            # parent-death signal), which killed its tree first.
            line = _read_all(self.exit_fd)
            self.returncode = int(line.split()[0]) if line else -signal.SIGKILL  # 1st: the guard's
            os.close(self.exit_fd)
        return self.returncode

    def release(self) -> None:
        """Let the server reap the guard: its pid is not ours to signal any more.

        Told with the next request, not on its own: it costs the server no wake-up.
        """
        pid = self.pid
        if pid is not None:
            self._server.release(pid)


class _Server:
    """One running guard server: its process, our end of its socket and of its lifeline."""

    def __init__(self, grace: float) -> None:
        self.lifeline_read, self.lifeline = os.pipe()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self._released: list[int] = []
        try:
            command = [sys.executable, "-I", "-S", SERVER, str(os.getpid()), str(grace)]
            self.proc = subprocess.Popen(
                [*command, str(theirs.fileno())],
                stdin=self.lifeline_read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # out of the worker's group: terminal signals miss it
            )
        except BaseException:
            self.forget()
            raise
        finally:
            theirs.close()
            os.close(self.lifeline_read)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, fd: int) -> None:
        """Wait until the server wrote to ``fd``, resuming it if a step stopped it
        (SIGSTOP), and killing it if it still says nothing: its guards then kill their
        trees (parent-death signal), and ``fd`` reads end-of-file."""
        until = time.monotonic() + SERVER_PATIENCE
        while not select.select([fd], [], [], 0.5)[0]:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(
                    signal.SIGKILL if time.monotonic() > until else signal.SIGCONT
                )

    def release(self, pid: int) -> None:
        with self._lock:
            self._released.append(pid)

    def spawn(self, argv: list[str], cwd: str, env: dict[str, str]) -> Guarded:
        """Have the server start ``argv``; raises OSError if the server is gone."""
        payload = os.memfd_create("conveyor-command", os.MFD_CLOEXEC)
        pipes = [os.pipe(), os.pipe(), os.pipe()]  # output, pid, exit status
        theirs = [payload, *(write for _read, write in pipes)]
        try:
            with open(payload, "wb", closefd=False) as file:
                file.write(json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode())
            with self._lock:
                self.proc.send_signal(signal.SIGCONT)  # in case a step stopped it
                released, self._released = self._released, []
                message = b" ".join([b"start", *(b"%d" % pid for pid in released)])
                try:
                    socket.send_fds(self.sock, [message], theirs)
                except OSError:
                    self._released = released + self._released
                    raise
        except BaseException:
            for read, _write in pipes:
                os.close(read)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        (output, _), (pid, _), (status, _) = pipes
        return Guarded(output, pid, status, self)

    def forget(self) -> None:
        """Close our ends (a forked child's copies): the server's lifeline is not ours."""
        self.sock.close()
        os.close(self.lifeline)


def _read_all(fd: int) -> bytes:
    """The line written to ``fd`` at once (pid, exit code); empty at end of file."""
    return os.read(fd, 64).strip()


class _Keeper:
    """Starts guard servers from a thread that lives as long as the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: _Server | None = None
        self._requests: queue.SimpleQueue[tuple[float, Future[_Server]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def current(self, grace: float) -> _Server:
        """The running server, started (again) if there is none."""
        with self.lock:
            if self.server is not None and self.server.alive():
                return self.server
            if self.server is not None:
                self.server.forget()
                self.server = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="conveyor-guard-keeper", daemon=True
                )
                self._thread.start()
            started: Future[_Server] = Future()
            self._requests.put((grace, started))
            self.server = started.result()
            return self.server

    def _serve(self) -> None:
        while True:
            grace, started = self._requests.get()
            try:
                started.set_result(_Server(grace))
            except BaseException as exc:  # handed to the caller, who raises it
                started.set_exception(exc)

    def after_fork(self) -> None:
        """In a forked child: the parent's server and thread are not ours."""
        self.lock = threading.Lock()
        if self.server is not None:
            self.server.forget()
        self.server, self._thread = None, None
        self._requests = queue.SimpleQueue()


_KEEPER = _Keeper()
os.register_at_fork(after_in_child=_KEEPER.after_fork)


def spawn(argv: list[str], cwd: str, env: dict[str, str], grace: float) -> Guarded:
    """Start ``argv`` in ``cwd`` with ``env`` under a guard of the worker's guard server."""
    try:
        _check(argv, env)
        try:
            return _KEEPER.current(grace).spawn(argv, cwd, env)
        except OSError:  # the server died since it was last used: once more, with a new one
            return _KEEPER.current(grace).spawn(argv, cwd, env)
    except (OSError, ValueError) as exc:
        raise SandboxError(f"could not start the command: {exc}") from exc


def _check(argv: list[str], env: dict[str, str]) -> None:
    """Refuse here what ``exec`` would refuse in the guard, where only a code would tell."""
    if any("\0" in arg for arg in argv):
        raise ValueError("embedded null byte in the command")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"illegal environment variable name or value: {name!r}")


def server_pid() -> int | None:
    """The pid of this process's guard server, if one runs (for tests and diagnostics)."""
    server = _KEEPER.server
    return server.proc.pid if server is not None and server.alive() else None
