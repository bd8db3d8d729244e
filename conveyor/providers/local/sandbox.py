"""The local sandbox: steps run as host processes inside the run's workspace directory.

It isolates little: a scrubbed environment, a working directory kept inside the
workspace, an optional per-process address-space limit, and a process tree that is
killed on timeout, cancel or close. Images, mounts, networks and CPU limits need the
Docker sandbox; asking the local one for them is an error, not a silent no-op.

Every command runs under a guard (``guard.py``, forked by the worker's guard server:
``guard_client.py``): a subreaper that keeps every process the command starts as its
descendant, however it detaches (``setsid``, a double fork), and kills that whole tree
on cancel, on timeout, when the shell exits, and when the worker that started it dies,
even by SIGKILL (a parent-death signal and a lifeline pipe). So no step's process
outlives its attempt.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from conveyor.orchestrator.contracts import (
    ExecResult,
    LineSink,
    OutputSink,
    SandboxConfig,
    SandboxRequest,
)
from conveyor.orchestrator.errors import SandboxError
from conveyor.orchestrator.settings import Settings

from ..sandbox_common import (
    CONTAINER_WORKSPACE,
    POLL,
    READ_BYTES,
    RUN_ID,
    OutputSplitter,
    effective_deadline,
    grow_pipe,
    limit_reached,
    output_sink,
    parse_memory,
    raise_for,
)
from .guard import kill_until_gone, tagged
from .guard_client import Guarded, spawn

#: The only host variables a command sees: the orchestrator's own secrets stay out.
HOST_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DRAIN_AFTER_KILL = 0.5  # how long to wait for EOF once the group is dead
#: How long ``finish`` waits for the guard to have killed the tree and exited.
GUARD_PATIENCE = 10.0
#: How long after its SIGKILL order a guard may take to exit before it is killed itself.
GUARD_STUCK = 5.0
#: Each command's processes carry ``CONVEYOR_PROCESS_TREE=<token>`` in their environment:
#: if its guard is killed before its tree (by the step itself), the sandbox finds what
#: the guard left by that mark, since they are no longer its descendants.
TREE_MARK = "CONVEYOR_PROCESS_TREE"

# `ulimit -v` sets RLIMIT_AS like setrlimit would, without a preexec_fn, which is
# unsafe in the threaded workers that call exec.
_ULIMIT_SCRIPT = 'ulimit -v "$1" && exec /bin/sh -c "$2"'


class LocalSandboxFactory:
    """Opens local sandboxes; each run's workspace is ``workspace_root / run_id``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._root: Path | None = None  # workspace_root resolved, once: a step pays no lstat

    def open(self, request: SandboxRequest) -> LocalSandbox:
        """Create the run's workspace if needed and open a sandbox on it for one step."""
        _refuse_unsupported(request.config)
        memory = parse_memory(request.config.memory_limit)
        root = self._workspace(request.run_id)
        (root / ".conveyor" / "outputs").mkdir(parents=True, exist_ok=True)  # the contract's
        if self._root is None:
            self._root = self.settings.workspace_root.resolve()
        # Only the root is resolved (once): the run's directory is named under it.
        return LocalSandbox(self._root / request.run_id, request, memory_bytes=memory)

    def cleanup_run(self, run_id: str) -> None:
        """Delete the run's workspace; nothing happens when it is already gone."""
        root = self._workspace(run_id)
        if root.exists():
            shutil.rmtree(root, onerror=_make_writable_and_retry)

    def _workspace(self, run_id: str) -> Path:
        if not RUN_ID.fullmatch(run_id):
            raise SandboxError(f"run id {run_id!r} cannot name a workspace directory")
        return self.settings.workspace_root / run_id


class LocalSandbox:
    """Runs commands on this host, inside the run's workspace directory."""

    def __init__(self, root: Path, request: SandboxRequest, *, memory_bytes: int | None) -> None:
        self.root = root
        self.workspace = str(root)
        self._request = request
        self._memory = memory_bytes
        self._deadline, self._timeout_message = effective_deadline(request)
        self._lock = threading.Lock()
        self._running: set[_Command] = set()
        self._closed = False
        work_dir = request.config.work_dir
        self._default_dir = self.resolve(work_dir) if work_dir else root

    def resolve(self, path: str) -> Path:
        """Map a sandbox path onto the host, refusing any that leaves the workspace."""
        try:
            target = (self.root / self._relative(path)).resolve()
        except (OSError, ValueError) as exc:
            raise SandboxError(f"{path!r} is not a usable path: {exc}") from exc
        if not target.is_relative_to(self.root):
            raise SandboxError(f"{path!r} is outside the workspace")
        return target

    def exec(
        self,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        on_line: LineSink | None = None,
        on_output: OutputSink | None = None,
    ) -> ExecResult:
        """Run ``script`` with ``/bin/sh -c``, streaming its output in blocks of lines to
        ``on_output`` (or line by line to ``on_line``)."""
        self._refuse_if_closed()
        self._raise_for(limit_reached(self._request.cancel, self._deadline))
        cwd = self.resolve(work_dir) if work_dir is not None else self._default_dir
        cwd.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        sink = output_sink(on_line, on_output)
        command = self._start(script, cwd, self._environment(env), sink)
        try:
            command.pump()
        finally:
            with self._lock:
                self._running.discard(command)
            exit_code = command.finish()
        self._raise_for(command.reason)
        if self._closed:
            raise SandboxError("the sandbox was closed while a command ran")
        return ExecResult(exit_code, time.monotonic() - started, list(command.lines.tail))

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host file or directory to ``dest`` inside the workspace."""
        self._refuse_if_closed()
        target = self.resolve(dest)
        _copy(Path(src), target, guard=self.root)

    def copy_out(self, src: str, dest: Path) -> None:
        """Copy a workspace file or directory out to the host path ``dest``."""
        self._refuse_if_closed()
        # Most steps ask for an outputs file nobody wrote: no need to resolve its path.
        relative = self._relative(src)
        if ".." not in relative.split("/") and not os.path.lexists(self.root / relative):
            raise SandboxError(f"{src} does not exist in the workspace")
        source = self.resolve(src)
        if not source.exists():
            raise SandboxError(f"{src} does not exist in the workspace")
        _copy(source, Path(dest), guard=None)

    def close(self) -> None:
        """Kill whatever still runs; the workspace stays for the run's later steps."""
        with self._lock:
            self._closed = True
            for command in self._running:
                command.kill_tree()

    def _relative(self, path: str) -> str:
        if not os.path.isabs(path):
            return path
        # Paths under the host workspace are accepted too: steps build them from
        # `sandbox.workspace`, which is the host directory here.
        for base in (CONTAINER_WORKSPACE, self.workspace):
            if path == base or path.startswith(base + "/"):
                return path[len(base) :].lstrip("/")
        raise SandboxError(
            f"{path!r} is outside the workspace: the local sandbox takes paths relative "
            f"to the workspace or under {CONTAINER_WORKSPACE}"
        )

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {key: os.environ[key] for key in HOST_ENV_KEYS if key in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            CI="true",
            CONVEYOR_WORKSPACE=self.workspace,
            CONVEYOR_RUN_ID=self._request.run_id,
            CONVEYOR_STEP=self._request.step_key,
        )
        env.update(self._request.config.env)
        env.update(extra or {})
        return env

    def _start(
        self, script: str, cwd: Path, env: dict[str, str], sink: OutputSink | None
    ) -> _Command:
        argv = ["/bin/sh", "-c", script]
        if self._memory is not None:
            kib = str(-(-self._memory // 1024))
            argv = ["/bin/sh", "-c", _ULIMIT_SCRIPT, "conveyor-limit", kib, script]
        mark = f"{TREE_MARK}={secrets.token_hex(16)}"
        env = {**env, TREE_MARK: mark.partition("=")[2]}
        # Under the lock, so that close() either sees this command or refuses it.
        with self._lock:
            self._refuse_if_closed()
            command = _Command(
                _spawn(argv, cwd, env), self._request.cancel, self._deadline, sink, mark=mark
            )
            self._running.add(command)
        return command

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def _raise_for(self, reason: str | None) -> None:
        raise_for(reason, self._timeout_message)


class _Command:
    """One script running under its guard, in its own session: output pump, limits, kill.

    One thread does it all: a selector waits on the output pipe and on a pidfd of the
    guard (readable once it exits, without reaping it), and wakes at least every POLL
    seconds to check the deadline and the cancel flag. The guard exits only once the
    command's whole tree is gone; the process group is only a fallback.
    """

    def __init__(
        self,
        proc: Guarded,
        cancel: threading.Event,
        deadline: float | None,
        sink: OutputSink | None,
        *,
        mark: str = "",
    ) -> None:
        self.proc = proc
        self._mark = mark.encode()
        self.lines = OutputSplitter(sink)
        self.reason: str | None = None  # "timeout" or "cancel" once a limit fired
        self._cancel = cancel
        self._deadline = deadline
        self._pidfd = proc.exit_fd  # readable once the guard exited, as a pidfd would be
        self._term_sent: float | None = None
        self._kill_sent = False
        self._exited = False

    def pump(self) -> None:
        """Read output until the shell exits, then stop whatever it left running."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.fileno()
        grow_pipe(out)
        with selectors.DefaultSelector() as selector:
            selector.register(out, selectors.EVENT_READ)
            selector.register(self._pidfd, selectors.EVENT_READ)
            pipe_open = True
            while pipe_open or not self._exited:
                for key, _ in selector.select(POLL):
                    if key.fd == self._pidfd:
                        self._exited = True  # what remains is cleanup: no limit applies now
                        selector.unregister(self._pidfd)
                    elif not self._read_chunk(out):
                        pipe_open = False
                        selector.unregister(out)
                if self._exited and pipe_open:  # the guard is gone; an escapee holds the pipe
                    self.signal(signal.SIGTERM)
                    self._drain_leftovers(selector)
                    pipe_open = False
                self._check_limits()
        self.lines.flush()

    def finish(self) -> int:
        """Kill what is left, reap the guard; return the shell's exit code."""
        self.kill_tree()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(GUARD_PATIENCE)
        # The guard is not released yet, so its pid cannot name another process group;
        # killing the group kills a guard that is still there (stopped, stuck) too.
        self.signal(signal.SIGKILL)
        self.proc.stdout.close()
        code = self.proc.wait()  # and its exit pipe (``_pidfd``) closed
        self.proc.release()
        if code < 0:  # the guard was killed, perhaps before its tree: find what it left
            self._kill_marked()
        return 128 - code if code < 0 else code  # killed by a signal: the shell's way

    def _kill_marked(self) -> None:
        """SIGKILL every process that carries this command's mark, until none is left."""
        if self._mark:
            mark = self._mark
            kill_until_gone(lambda: tagged(mark), GUARD_PATIENCE, 0.01)

    def kill_tree(self) -> None:
        """Have the guard kill the command's whole tree now (it exits once it is gone)."""
        self._tell_guard(signal.SIGUSR1)

    def terminate_tree(self) -> None:
        """Have the guard send SIGTERM to the whole tree, and SIGKILL a grace period later."""
        self._tell_guard(signal.SIGTERM)

    def _tell_guard(self, signum: int) -> None:
        """Send ``signum`` to the guard, resumed first in case its step stopped it."""
        pid = self.proc.pid  # None: its server died before it said, and so did the guard
        with contextlib.suppress(ProcessLookupError, PermissionError):  # guard gone already
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signum)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (what did not leave it)."""
        pid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):  # group gone already
            if pid is not None:
                os.killpg(pid, signum)

    def _check_limits(self) -> None:
        """SIGTERM the tree when a limit is reached, SIGKILL it TERM_GRACE later.

        A guard that has not exited GUARD_STUCK after that (its step keeps stopping it
        with SIGSTOP) is killed itself; ``finish`` then kills its tree by its mark.
        """
        if self._exited:
            return
        if self.reason is None:
            self.reason = limit_reached(self._cancel, self._deadline)
            if self.reason is not None:
                self.terminate_tree()
                self._term_sent = time.monotonic()
            return
        if self._term_sent is None:
            return
        waited = time.monotonic() - self._term_sent
        if waited >= TERM_GRACE + GUARD_STUCK:
            self.signal(signal.SIGKILL)  # the guard's group: the guard, not yet reaped
            self._term_sent = None
        elif waited >= TERM_GRACE and not self._kill_sent:
            self.kill_tree()
            self._kill_sent = True

    def _read_chunk(self, fd: int) -> bool:
        """Read what the pipe has; False at EOF."""
        chunk = os.read(fd, READ_BYTES)
        if not chunk:
            return False
        self.lines.feed(chunk)
        return True

    def _read(self, selector: selectors.BaseSelector, timeout: float) -> bool:
        """Read what is available within ``timeout``; False at EOF."""
        if not selector.select(timeout):
            return True
        assert self.proc.stdout is not None
        return self._read_chunk(self.proc.stdout.fileno())

    def _drain_leftovers(self, selector: selectors.BaseSelector) -> None:
        """Background children would otherwise hold the pipe forever."""
        if not self._drain(selector, TERM_GRACE):
            self.signal(signal.SIGKILL)
            self._drain(selector, DRAIN_AFTER_KILL)

    def _drain(self, selector: selectors.BaseSelector, seconds: float) -> bool:
        """Read for at most ``seconds``; True once EOF is reached."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if not self._read(selector, min(POLL, left)):
                return True
        return False


def _refuse_unsupported(config: SandboxConfig) -> None:
    if config.image:
        raise SandboxError(
            f"the local sandbox cannot run images; image {config.image!r} needs the Docker sandbox"
        )
    for name in ("mounts", "network_mode", "cpu_limit"):
        if getattr(config, name) not in (None, []):
            raise SandboxError(
                f"the local sandbox cannot apply {name}; it needs the Docker sandbox (set an image)"
            )


def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> Guarded:
    """Start ``argv`` under a guard of its own, in a session of its own.

    The guard is forked by this process's guard server (``guard_client``), started on
    first use, so a command costs about a fork and an exec rather than an interpreter.
    The guard and the server watch a lifeline pipe that only this process holds, so
    they read end-of-file once it is gone, however it died. The command reads /dev/null.
    """
    return spawn(argv, str(cwd), env, TERM_GRACE)


def _copy(source: Path, target: Path, *, guard: Path | None) -> None:
    """Copy a file or tree; symlinks are copied as links, so nothing they name is read."""

    def copy_file(src: str, dst: str) -> object:
        # A symlinked directory already in the workspace must not carry files outside.
        if guard is not None and not Path(dst).resolve().is_relative_to(guard):
            raise SandboxError(f"{dst} is outside the workspace")
        return shutil.copy2(src, dst, follow_symlinks=False)

    try:
        if source.is_dir():
            shutil.copytree(
                source, target, symlinks=True, copy_function=copy_file, dirs_exist_ok=True
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_file(str(source), str(target))
    except OSError as exc:
        raise SandboxError(f"could not copy {source.name}: {exc}") from exc


def _make_writable_and_retry(func: Callable[[str], object], path: str, _exc: object) -> None:
    """rmtree's error hook: read-only directories (Go's module cache) block deletion."""
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
    func(path)
