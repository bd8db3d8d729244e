"""The Docker sandbox: one container per step on a workspace volume that lives for the run.

Each step gets a container started with a long ``sleep``; commands run in it through
``exec``, so files written by one command are there for the next, and the run's named
volume (``conveyor-ws-<run_id>``, mounted at ``/workspace``) carries them to later
steps. Containers start with no network, no capabilities, no new privileges and a pids
limit; host networking and bind mounts need the operator's settings to allow them.
"""

from __future__ import annotations

import contextlib
import posixpath
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Mount

from conveyor.orchestrator.contracts import ExecResult, LineSink, SandboxRequest
from conveyor.orchestrator.errors import SandboxError
from conveyor.orchestrator.settings import Settings

from .docker_archive import pack, spool, unpack
from .docker_policy import container_options, container_path
from .sandbox_common import (
    CONTAINER_WORKSPACE,
    POLL,
    RUN_ID,
    LineSplitter,
    effective_deadline,
    limit_reached,
    raise_for,
)

RUN_LABEL = "conveyor.run"
STEP_LABEL = "conveyor.step"
IDLE_COMMAND = ["sleep", "2147483647"]
OOM_EXIT = 137
# The kernel's count of OOM kills in the container's cgroup: v2's file, then v1's.
_OOM_COUNTERS = "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control"
# Merges stderr into stdout at the source, so lines keep the order they were written in,
# and creates the working directory first, so a work_dir need not exist beforehand.
_IN_DIR_SCRIPT = 'exec 2>&1; mkdir -p -- "$1" && cd -- "$1" && exec /bin/sh -c "$2"'


def volume_name(run_id: str) -> str:
    """The name of a run's workspace volume."""
    if not RUN_ID.fullmatch(run_id):
        raise SandboxError(f"run id {run_id!r} cannot name a workspace volume")
    return f"conveyor-ws-{run_id}"


class DockerSandboxFactory:
    """Opens Docker sandboxes; the engine is found the Docker CLI's way (DOCKER_HOST)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def client(self) -> docker.DockerClient:
        """A client of an engine that answers; SandboxError with the reason otherwise."""
        with self._lock:
            if self._client is None:
                try:
                    client = docker.from_env()
                    client.ping()
                except docker.errors.DockerException as exc:
                    raise SandboxError(
                        f"the Docker engine is unreachable: {_one_line(exc)}"
                    ) from exc
                self._client = client
            return self._client

    def open(self, request: SandboxRequest) -> DockerSandbox:
        """Start the step's container on the run's workspace volume."""
        config = request.config
        options = container_options(config, self.settings)
        volume = volume_name(request.run_id)
        client = self.client()
        image = _image(client, config.image or "")
        labels = {RUN_LABEL: request.run_id, STEP_LABEL: request.step_key}
        with _engine_errors():
            _ensure_volume(client, volume, request.run_id)
            container = client.containers.run(
                image,
                IDLE_COMMAND,
                detach=True,
                labels=labels,
                mounts=[Mount(CONTAINER_WORKSPACE, volume, type="volume"), *options.pop("mounts")],
                working_dir=CONTAINER_WORKSPACE,
                **options,
            )
        sandbox = DockerSandbox(client, container, request)
        try:
            sandbox.prepare()
        except BaseException:
            sandbox.close()
            raise
        return sandbox

    def cleanup_run(self, run_id: str) -> None:
        """Remove the run's containers and workspace volume; nothing happens when gone."""
        client = self.client()
        with _engine_errors():
            found = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
            for container in found:
                _remove(container)
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(volume_name(run_id)).remove(force=True)


class DockerSandbox:
    """One step's container: exec, copy in/out, limits, and removal on close."""

    workspace = CONTAINER_WORKSPACE

    def __init__(self, client: docker.DockerClient, container: Container, request: SandboxRequest):
        self._client = client
        self._container = container
        self._request = request
        self._deadline, self._timeout_message = effective_deadline(request)
        self._lock = threading.Lock()
        self._closed = False
        self._oom_seen = 0
        self._default_dir = container_path(request.config.work_dir or ".")

    def prepare(self) -> None:
        """Create the contract's ``.conveyor/outputs`` directory in the workspace."""
        result = self._run(["mkdir", "-p", f"{CONTAINER_WORKSPACE}/.conveyor/outputs"], {}, None)
        if result.exit_code != 0:
            raise SandboxError(f"could not prepare the workspace: {' '.join(result.tail)}")

    def exec(
        self,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        on_line: LineSink | None = None,
    ) -> ExecResult:
        """Run ``script`` with ``/bin/sh -c`` in the container, streaming each output line."""
        self._refuse_if_closed()
        self._raise_for(limit_reached(self._request.cancel, self._deadline))
        cwd = container_path(work_dir) if work_dir is not None else self._default_dir
        argv = ["/bin/sh", "-c", _IN_DIR_SCRIPT, "conveyor", cwd, script]
        result = self._run(argv, self._environment(env), on_line)
        if result.exit_code == OOM_EXIT and self._oom_killed():
            limit = self._request.config.memory_limit
            raise SandboxError(f"killed: out of memory (memory_limit {limit})")
        return result

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host file or directory to ``dest`` in the workspace (a tar, put_archive)."""
        self._refuse_if_closed()
        target = container_path(dest)
        if target == CONTAINER_WORKSPACE:
            raise SandboxError("copy_in needs a path inside the workspace, not the workspace")
        parent, name = posixpath.split(target)
        made = self._run(["mkdir", "-p", parent], {}, None)
        if made.exit_code != 0:
            raise SandboxError(f"could not create {parent}: {' '.join(made.tail)}")
        with tempfile.TemporaryFile() as archive:
            pack(Path(src), name, archive)
            archive.seek(0)
            with _engine_errors():
                self._container.put_archive(parent, archive)

    def copy_out(self, src: str, dest: Path) -> None:
        """Copy a workspace file or directory out to the host path ``dest`` (get_archive)."""
        self._refuse_if_closed()
        source = container_path(src)
        fd, name = tempfile.mkstemp(prefix="conveyor-copy-", suffix=".tar")
        archive = Path(name)
        try:
            with open(fd, "wb") as out:
                chunks, _stat = self._container.get_archive(source)
                spool(chunks, out)
            unpack(archive, Path(dest))
        except docker.errors.NotFound:
            raise SandboxError(f"{src} does not exist in the workspace") from None
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not copy {src}: {_one_line(exc)}") from exc
        finally:
            archive.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the step's container; the workspace volume stays for later steps."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _remove(self._container)

    def kill(self) -> None:
        """Kill the container: every command in it stops at once."""
        with contextlib.suppress(docker.errors.DockerException):  # stopped or removed already
            self._container.kill()

    def _run(self, argv: list[str], env: dict[str, str], sink: LineSink | None) -> ExecResult:
        started = time.monotonic()
        lines = LineSplitter(sink)
        with _engine_errors():
            exec_id = self._client.api.exec_create(
                self._container.id, argv, environment=env, stdout=True, stderr=True
            )["Id"]
            watcher = _Watcher(self, self._request.cancel, self._deadline)
            watcher.start()
            try:
                for chunk in self._client.api.exec_start(exec_id, stream=True):
                    lines.feed(chunk)
            finally:
                watcher.stop()
            lines.flush()
            self._raise_for(watcher.reason)
            if self._closed:
                raise SandboxError("the sandbox was closed while a command ran")
            code = self._client.api.exec_inspect(exec_id)["ExitCode"]
        return ExecResult(
            int(code if code is not None else -1), time.monotonic() - started, list(lines.tail)
        )

    def _oom_killed(self) -> bool:
        """True when the kernel's OOM killer struck in this container since the last look."""
        if self._request.config.memory_limit is None:
            return False
        kills = self._oom_kills()
        if kills is None:  # no cgroup counter: exit 137 under a memory limit says enough
            return True
        struck, self._oom_seen = kills > self._oom_seen, kills
        return struck

    def _oom_kills(self) -> int | None:
        # Docker's State.OOMKilled only covers the container's main process, not execs.
        with _engine_errors():
            exec_id = self._client.api.exec_create(
                self._container.id, ["/bin/sh", "-c", _OOM_COUNTERS + " 2>/dev/null"]
            )["Id"]
            text = self._client.api.exec_start(exec_id).decode("utf-8", errors="replace")
        for line in text.splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill" and count.strip().isdigit():
                return int(count)
        return None

    def _environment(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = {
            "CI": "true",
            "CONVEYOR_WORKSPACE": CONTAINER_WORKSPACE,
            "CONVEYOR_RUN_ID": self._request.run_id,
            "CONVEYOR_STEP": self._request.step_key,
        }
        env.update(self._request.config.env)
        env.update(extra or {})
        return env

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SandboxError("the sandbox is closed")

    def _raise_for(self, reason: str | None) -> None:
        raise_for(reason, self._timeout_message)


class _Watcher:
    """Kills the container once the deadline passes or the cancel flag is set."""

    def __init__(self, sandbox: DockerSandbox, cancel: threading.Event, deadline: float | None):
        self.reason: str | None = None
        self._sandbox = sandbox
        self._cancel = cancel
        self._deadline = deadline
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="conveyor-docker-watch", daemon=True
        )

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the command is over)."""
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(POLL):
            self.reason = limit_reached(self._cancel, self._deadline)
            if self.reason is not None:
                self._sandbox.kill()
                return


def _image(client: docker.DockerClient, name: str) -> str:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        raise SandboxError(
            f"image {name} is not on this Docker engine (build or pull it first)"
        ) from None
    except docker.errors.DockerException as exc:
        raise SandboxError(f"the Docker engine is unreachable: {_one_line(exc)}") from exc
    return name


def _ensure_volume(client: docker.DockerClient, name: str, run_id: str) -> None:
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        # Create is idempotent for a named volume: two steps racing here get the same one.
        client.volumes.create(name, labels={RUN_LABEL: run_id})


def _remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass  # removed already: what was asked for is done
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise SandboxError(f"could not remove a container: {_one_line(exc)}") from exc


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    """Translate the SDK's errors into SandboxError at the boundary."""
    try:
        yield
    except docker.errors.DockerException as exc:
        raise SandboxError(f"the Docker engine failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
