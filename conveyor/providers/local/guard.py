"""The guard of one local command: the command's whole process tree lives and dies with it.

The local sandbox starts every command under a ``Guard``: forked by the worker's guard
server (``guard_server.py``), which imports only the standard library, so a guard costs
a fork. (Run as a program, ``python -I -S guard.py ...``, it guards one command alone.)
A guard:

- becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process the command starts
  stays its descendant however it detaches (``setsid``, a double fork, ``nohup``), so
  a walk of ``/proc`` from here finds every one of them;
- asks the kernel for ``SIGUSR1`` when its parent dies (``PR_SET_PDEATHSIG``: the
  server, or the worker thread that started it), and also watches a lifeline: its
  standard input is a pipe only the worker holds, which reads end-of-file once the
  worker is gone, however it died;
- on ``SIGTERM`` (cancel, timeout) sends ``SIGTERM`` to every descendant and, after the
  grace period, kills whatever is left; on ``SIGUSR1`` or a lost lifeline it kills at
  once; when the command's shell exits, it stops what the shell left behind the same way.

Killing is repeated until a walk finds no descendant left (a process may fork while it
is being killed), and every orphan that is reparented here is reaped. The guard exits
with the shell's status (``128 + n`` for a shell killed by signal ``n``) only once the
tree is empty.

Usage: ``guard.py PARENT_PID GRACE_SECONDS -- ARGV...``
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

TYPE_CHECKING = False  # not typing's: the guard's start-up imports nothing it can avoid
if TYPE_CHECKING:
    from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: How long killing may go on before the guard gives up on a tree that keeps forking.
KILL_PATIENCE = 30.0
_RESET = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD)


def descendants(root: int) -> list[int]:
    """Live (not zombie) descendants of ``root``.

    Read from the kernel's lists of children (``/proc/PID/task/TID/children``): a guard
    is a subreaper, so this is usually one small read, where a walk of every process
    on the host costs milliseconds. Without those lists, a walk of /proc it is.
    """
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        return _walk_all(root)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in _children(todo.pop()):
            todo.append(child)
            if not _zombie(child):
                found.append(child)
    return found


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid``; none once it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listed:
                found.extend(int(child) for child in listed.read().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return True  # gone: nothing to kill
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] in (b"Z", b"X")


def _walk_all(root: int) -> list[int]:
    """Live descendants of ``root``, found by a walk of every process in /proc."""
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) < 2:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] in (b"Z", b"X"):
            zombies.add(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            todo.append(child)
            if child not in zombies:
                found.append(child)
    return found


def tagged(tag: bytes) -> list[int]:
    """Live processes whose environment holds ``tag`` (a ``NAME=value`` entry).

    The fallback when a guard is gone before its tree (its own step killed it): what it
    started was reparented away from it, but still carries the environment it got.
    """
    found: list[int] = []
    own = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                entries = environ.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if tag in entries:
            found.append(int(name))
    return found


class Guard:
    """Runs one command and answers for its whole tree."""

    def __init__(
        self, parent: int, grace: float, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.parent, self.grace, self.argv = parent, grace, argv
        self.env = os.environ if env is None else env
        self.pid = os.getpid()
        self.child = 0
        self.status: int | None = None  # the shell's wait status once it exited
        self.kill_at: float | None = None  # when SIGTERM turns into SIGKILL
        self.signals: list[int] = []
        self._wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def start(self) -> None:
        """Arm the kernel's help, then start the command with /dev/null as its input."""
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
        if os.getppid() != self.parent:  # the worker died before the signal was armed
            sys.exit(137)
        self.child = os.posix_spawn(
            self.argv[0],
            self.argv,
            self.env,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            setsigdef=_RESET,
        )

    def loop(self) -> int:
        """Wait for the shell, a signal or the worker's end; the exit status to leave with."""
        while True:
            self._reap()
            pending, self.signals = self.signals, []
            for signum in pending:
                if signum in (signal.SIGUSR1, signal.SIGHUP):
                    return self._kill_all()
                if signum == signal.SIGTERM and self.kill_at is None:
                    self._terminate()
            if self.status is not None and self.kill_at is None:
                if not descendants(self.pid):
                    return self._code()
                self._terminate()  # what the shell left behind (`sleep 100 &`)
            if self.kill_at is not None:
                if time.monotonic() >= self.kill_at:
                    return self._kill_all()
                if self.status is not None and not descendants(self.pid):
                    return self._code()
            watched = [self._wake_read, 0]
            ready, _, _ = select.select(watched, [], [], 0.1 if self.kill_at else 1.0)
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
            if 0 in ready and not os.read(0, 4096):  # end of file: the worker is gone
                return self._kill_all()

    def _terminate(self) -> None:
        for pid in descendants(self.pid):
            _send(pid, signal.SIGTERM)
        self.kill_at = time.monotonic() + self.grace

    def _kill_all(self) -> int:
        kill_until_gone(lambda: descendants(self.pid), KILL_PATIENCE, 0.005, self._reap)
        self._reap()
        return self._code(killed=True)

    def _reap(self) -> None:
        """Collect every child that ended: the shell, and orphans reparented here."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.status = status

    def _code(self, *, killed: bool = False) -> int:
        if self.status is None:
            return 128 + signal.SIGKILL if killed else 1
        if os.WIFSIGNALED(self.status):
            return 128 + os.WTERMSIG(self.status)
        return os.waitstatus_to_exitcode(self.status)


def kill_until_gone(
    find: Callable[[], list[int]],
    patience: float,
    pause: float,
    between: Callable[[], None] | None = None,
) -> None:
    """SIGKILL what ``find`` names, again and again (a fork may add to it), until it
    names nothing or ``patience`` seconds have passed; ``between`` runs after each round."""
    until = time.monotonic() + patience
    while time.monotonic() < until:
        alive = find()
        if not alive:
            return
        for pid in alive:
            _send(pid, signal.SIGKILL)
        if between is not None:
            between()
        time.sleep(pause)


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.kill(pid, signum)


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)``; without it the lifeline and the subreaper walk remain."""
    try:
        if not _LIBC:  # once per process: the server's guards, forked, inherit it
            import ctypes  # noqa: PLC0415  (only here: the guard's start-up stays small)

            _LIBC.append(ctypes.CDLL(None, use_errno=True).prctl)
        _LIBC[0](option, value, 0, 0, 0)
    except (OSError, AttributeError, ImportError):
        pass


_LIBC: list[Callable[..., int]] = []


def main(args: list[str]) -> int:
    """Run ``guard.py PARENT GRACE -- ARGV...``; the shell's exit status."""
    if len(args) < 4 or args[2] != "--":
        print("usage: guard.py PARENT_PID GRACE_SECONDS -- ARGV...", file=sys.stderr)
        return 2
    guard = Guard(int(args[0]), float(args[1]), args[3:])
    try:
        guard.start()
    except OSError as exc:
        print(f"could not start {args[3]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return guard.loop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
