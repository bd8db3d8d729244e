"""The guard server: one per worker process, it starts every local command under a guard.

A fresh interpreter per command costs milliseconds (far more on a loaded host); a fork
of this small one, already running, costs a fraction of that. So the worker starts this
program once (``guard_client.py``, by its own interpreter in isolated mode with no site
packages) and asks it over a Unix socket to start each command. For each one it forks
a guard (``guard.Guard``: a child subreaper in a session of its own, whose tree lives
and dies with it), hands it the command's output pipe, and reports its pid and its
exit status on pipes of that command.

The worker's end is watched as a lone guard watches it, by the server and every guard:
standard input is a lifeline pipe only the worker holds (end-of-file once it is gone,
however it died), and ``PR_SET_PDEATHSIG``. When the worker dies, the server exits and
each guard kills its tree at once; when the server alone dies, its guards get their
parent-death signal and do the same, and the worker starts a new server.

Requests are datagrams on the socket (file descriptor ``SOCKET_FD``): ``start``, then
the pids of guards the worker is done with, with four descriptors attached (SCM_RIGHTS):

- a memfd holding the JSON ``{"argv", "cwd", "env"}``;
- the output pipe's write end (the command's stdout and stderr);
- a pid pipe's write end: the server writes the guard's ``PID\\n`` and closes it;
- an exit pipe's write end: the guard closes its output, writes its exit code
  ``CODE\\n`` and exits (the worker need not wait for the server to hear of it); if
  the guard was killed instead, the server writes ``-N\\n`` (N: the signal).

A guard that exited stays a zombie until the worker is done with it, so that its pid
and process group name nothing else while the worker may signal them.

Usage: ``guard_server.py PARENT_PID GRACE_SECONDS SOCKET_FD``
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys

try:
    from .guard import PR_SET_PDEATHSIG, Guard, prctl
except ImportError:  # run as a script, as the worker does (-I: not even its own directory)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from guard import PR_SET_PDEATHSIG, Guard, prctl  # type: ignore[no-redef,import-not-found]

_STOP = (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM)


class Server:
    """Forks a guard per request; reports and, once released, reaps each one."""

    def __init__(self, parent: int, grace: float, sock: socket.socket) -> None:
        self.parent, self.grace, self.sock = parent, grace, sock
        self.status: dict[int, int] = {}  # guard pid -> its status pipe, until reported
        self.exited: set[int] = set()  # reported, not yet released
        self.released: set[int] = set()  # released before it exited
        self.signals: list[int] = []
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, *_STOP):
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def run(self) -> int:
        """Serve until the worker is gone (lifeline, parent-death signal) or stops us."""
        prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
        if os.getppid() != self.parent:  # the worker died before the signal was armed
            return 137
        while True:
            pending, self.signals = self.signals, []
            if any(signum in _STOP for signum in pending):
                return 0  # each guard's own parent-death signal kills its tree
            self._collect()
            watched = [self._wake_read, self.sock.fileno(), 0]
            ready, _, _ = select.select(watched, [], [], 1.0)
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
            if 0 in ready and not os.read(0, 4096):  # end of file: the worker is gone
                return 0
            if self.sock.fileno() in ready and not self._serve():
                return 0  # the worker closed its end

    def _serve(self) -> bool:
        """Answer one request; False once the worker's end of the socket is closed."""
        try:
            message, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 4)
        except InterruptedError:
            return True
        if not message:
            return False
        words = message.split()
        if words and words[0] == b"start" and len(fds) == 4:
            for pid in words[1:]:
                self._release(int(pid))
            self._start(*fds)
        else:  # not a request of ours: drop it, with whatever it carried
            for fd in fds:
                os.close(fd)
        return True

    def _start(self, payload_fd: int, out: int, pid_pipe: int, status: int) -> None:
        try:
            request = json.loads(os.pread(payload_fd, os.fstat(payload_fd).st_size, 0))
        finally:
            os.close(payload_fd)
        server = os.getpid()
        pid = os.fork()
        if pid == 0:  # the guard
            code = _guard(server, self.grace, request, out, status)
            try:
                os.close(1)  # the output's end first: then the exit code
                os.close(2)
                os.write(3, b"%d\n" % code)  # its status pipe, moved to 3
            finally:
                os._exit(code)
        os.close(out)
        with contextlib.suppress(OSError):  # the worker gave up on it: it will not ask
            os.write(pid_pipe, b"%d\n" % pid)
        os.close(pid_pipe)
        self.status[pid] = status

    def _collect(self) -> None:
        """Report each guard that exited; it stays a zombie until it is released."""
        for pid in list(self.status):
            code: int | None
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                code = -signal.SIGKILL  # reaped by someone else: it is gone, cause unknown
            else:
                if info is None:
                    continue
                # An exit code, the guard wrote itself; a signal, nobody reported.
                code = None if info.si_code == os.CLD_EXITED else -info.si_status
            status = self.status.pop(pid)
            try:
                if code is not None:
                    os.write(status, b"%d\n" % code)
            except OSError:  # the worker stopped listening: nothing to tell
                pass
            os.close(status)
            self.exited.add(pid)
            if pid in self.released:
                self._release(pid)

    def _release(self, pid: int) -> None:
        if pid in self.exited:
            self.exited.discard(pid)
            self.released.discard(pid)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        elif pid in self.status:
            self.released.add(pid)  # reaped once it exited


def _guard(server: int, grace: float, request: dict[str, object], out: int, status: int) -> int:
    """In the forked child: become the command's guard (its parent: ``server``); its status."""
    try:
        os.setsid()  # its own session and process group, so a group kill reaches its tree
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(status, 3, inheritable=False)  # where its exit code goes; not the command's
        os.closerange(4, 1 << 16)  # the server's socket, other guards' status pipes
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, *_STOP):
            signal.signal(signum, signal.SIG_DFL)
        argv, env = list(request["argv"]), dict(request["env"])  # type: ignore[call-overload]
        guard = Guard(server, grace, argv, env)
        os.chdir(str(request["cwd"]))
        guard.start()
    except OSError as exc:
        os.write(2, f"could not start the command: {exc.strerror or exc}\n".encode())
        return 127
    except BaseException:  # never back into the server's loop from a child
        return 126
    return guard.loop()


def main(args: list[str]) -> int:
    """Run ``guard_server.py PARENT GRACE SOCKET_FD``."""
    if len(args) != 3:
        print("usage: guard_server.py PARENT_PID GRACE_SECONDS SOCKET_FD", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(args[2]))
    # No cycles to collect here; and a collection in a forked guard would copy the
    # pages of every object it visits.
    gc.disable()
    return Server(int(args[0]), float(args[1]), sock).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
