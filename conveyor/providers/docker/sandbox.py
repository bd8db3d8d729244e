"""The Docker sandbox: one container per step on a workspace that lives for the run.

Each step gets a container started with a long ``sleep``; commands run in it through
``exec``, so files written by one command are there for the next. The run's workspace
is one directory on the worker's host (``workspace_root/<run id>``, the very directory
local steps use), reached through a volume named ``conveyor-ws-<run_id>`` that is bound
to it and mounted at ``/workspace``: a file written by a local step is seen by a container
step and the other way round.

Consequence: the engine must see the worker's filesystem at the same path. A local
engine does; a worker in a container needs a Docker-in-Docker sidecar (or the host's
engine) with the data directory mounted at the same path in both.

No step's container outlives its attempt: each has a watchdog process (``watchdog.py``)
that removes it when the worker that started it dies, however it died (removing a
container kills every process in it, detached ones included), and a new attempt of a
step first removes any container an earlier attempt of that step left (labels name the
run and the step).

Containers start with no network, no capabilities, no new privileges and a pids limit;
host networking and bind mounts need the operator's settings to allow them. A closed
step's container is removed in the background (the next step need not wait for it);
``cleanup_run`` waits for those removals, then removes what is left of the run: its
containers, its volume and its directory, through a short container when the worker
may not delete files a container created as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from conveyor.orchestrator.contracts import ExecResult, LineSink, OutputSink, SandboxRequest
from conveyor.orchestrator.errors import SandboxError
from conveyor.orchestrator.settings import Settings

from ..sandbox_common import (
    CONTAINER_WORKSPACE,
    RUN_ID,
    OutputSplitter,
    effective_deadline,
    limit_reached,
    output_sink,
    raise_for,
)
from .archive import pack, spool, unpack
from .client import (
    RUN_LABEL,
    STEP_LABEL,
    EngineClient,
    docker_client,
    engine_errors,
    image_missing,
    one_line,
    workspace_dir,
)
from .containers import Removals, Watcher, remove_container, wipe_directory
from .policy import container_options, container_path
from .watchdog import DONE

log = logging.getLogger("conveyor.docker")
IDLE_COMMAND = ["sleep", "2147483647"]
WATCHDOG = str(Path(__file__).with_name("watchdog.py"))
OOM_EXIT = 137
OUTPUTS_DIR = ".conveyor/outputs"
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
        self._engine = EngineClient(docker_client)
        self._volumes: set[str] = set()  # volumes known to exist, bound to their directory
        self._images: dict[str, str] = {}  # an image each run used: it can wipe the run
        self._removals = Removals()
        self._live: set[str] = set()  # containers of sandboxes open in this process
        self._lock = threading.Lock()

    def client(self) -> docker.DockerClient:
        """A client of an engine that answers; SandboxError with the reason otherwise."""
        return self._engine.get()

    def open(self, request: SandboxRequest) -> DockerSandbox:
        """Start the step's container on the run's workspace."""
        config = request.config
        options = container_options(config, self.settings)
        client = self.client()
        image = config.image or ""
        host = workspace_dir(self.settings, request.run_id)
        (host / OUTPUTS_DIR).mkdir(parents=True, exist_ok=True)  # the contract's
        volume = self._volume(client, request.run_id, host)
        self._images[request.run_id] = image
        mounts = [Mount(CONTAINER_WORKSPACE, volume, no_copy=True), *options.pop("mounts")]
        labels = {RUN_LABEL: request.run_id, STEP_LABEL: request.step_key}
        self._remove_stale(client, labels)
        container_id = _start(client, image, labels, mounts, options, host)
        try:
            watchdog = _watchdog(container_id)
        except BaseException:
            remove_container(client.api, container_id)
            raise
        with self._lock:
            self._live.add(container_id)
        return DockerSandbox(
            client, container_id, request, host, self._removals, watchdog, self._closed
        )

    def _closed(self, container_id: str) -> None:
        with self._lock:
            self._live.discard(container_id)

    def _remove_stale(self, client: docker.DockerClient, labels: dict[str, str]) -> None:
        """Remove the containers earlier attempts of this step left (a worker that died
        with its watchdog, say): whatever still runs in them stops."""
        wanted = [f"{name}={value}" for name, value in labels.items()]
        with engine_errors():
            found = client.api.containers(all=True, filters={"label": wanted})
        with self._lock:
            stale = [c["Id"] for c in found if c["Id"] not in self._live]
        for container_id in stale:
            log.warning("removing container %s left by an earlier attempt", container_id[:12])
            remove_container(client.api, container_id)

    def cleanup_run(self, run_id: str) -> None:
        """Remove the run's containers, volume and directory; nothing happens when gone."""
        self._removals.wait(run_id)
        client = self.client()
        with engine_errors():
            found = client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
            for container in found:
                remove_container(client.api, container["Id"])
        host = workspace_dir(self.settings, run_id)
        if host.exists():
            self._delete(client, run_id, host)
        name = volume_name(run_id)
        with engine_errors(), contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(name, force=True)
        self._volumes.discard(name)
        self._images.pop(run_id, None)

    def _delete(self, client: docker.DockerClient, run_id: str, host: Path) -> None:
        try:
            shutil.rmtree(host)
        except PermissionError as exc:
            # Files a container made as root; a container may delete them.
            image = self._images.get(run_id)
            if image is None:
                raise SandboxError(f"could not remove the workspace {host}: {exc}") from exc
            wipe_directory(client.api, image, host)
            shutil.rmtree(host, ignore_errors=True)

    def _volume(self, client: docker.DockerClient, run_id: str, host: Path) -> str:
        """The run's volume, bound to its directory; created on the first step."""
        name = volume_name(run_id)
        if name in self._volumes:
            return name
        opts = {"type": "none", "o": "bind", "device": str(host)}
        with engine_errors():
            try:
                found = client.api.inspect_volume(name)
            except docker.errors.NotFound:
                # Create is idempotent for equal options: two steps racing get one volume.
                found = client.api.create_volume(name, "local", opts, labels={RUN_LABEL: run_id})
        if (found.get("Options") or {}).get("device") != str(host):
            raise SandboxError(f"volume {name} exists and is not bound to the run's workspace")
        self._volumes.add(name)
        return name


def _start(
    client: docker.DockerClient,
    image: str,
    labels: dict[str, str],
    mounts: list[Mount],
    options: dict[str, Any],
    host: Path,
) -> str:
    """Create and start the idle container; its id."""
    api = client.api
    try:
        created = api.create_container(
            image,
            IDLE_COMMAND,
            # [""] resets the image's ENTRYPOINT: tool images (a scanner's, say) start
            # their tool, which would take the idle command as its arguments and exit.
            entrypoint=[""],
            labels=labels,
            working_dir=CONTAINER_WORKSPACE,
            host_config=api.create_host_config(mounts=mounts, **options),
        )
    except docker.errors.ImageNotFound:
        raise image_missing(image) from None
    except docker.errors.DockerException as exc:
        raise SandboxError(f"the Docker engine failed: {one_line(exc)}") from exc
    container_id: str = created["Id"]
    try:
        api.start(container_id)
    except docker.errors.DockerException as exc:
        remove_container(api, container_id)
        hint = f" (the engine must see {host})" if "no such file" in str(exc).lower() else ""
        raise SandboxError(f"could not start the container: {one_line(exc)}{hint}") from exc
    return container_id


def _watchdog(container_id: str) -> subprocess.Popen[bytes]:
    """Start the container's watchdog; its standard input is the lifeline (``watchdog.py``)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", WATCHDOG, container_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a kill of the worker's process group spares it
        )
    except OSError as exc:
        raise SandboxError(f"could not start the container's watchdog: {exc}") from exc


class DockerSandbox:
    """One step's container: exec, copy in/out, limits, and removal on close."""

    workspace = CONTAINER_WORKSPACE

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        request: SandboxRequest,
        host: Path,
        removals: Removals,
        watchdog: subprocess.Popen[bytes] | None = None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._id = container_id
        self._watchdog = watchdog
        self._on_close = on_close
        self._request = request
        self._host = host
        self._removals = removals
        self._deadline, self._timeout_message = effective_deadline(request)
        self._lock = threading.Lock()
        self._closed = False
        self._oom_seen = 0
        self._default_dir = container_path(request.config.work_dir or ".")

    def exec(
        self,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        on_line: LineSink | None = None,
        on_output: OutputSink | None = None,
    ) -> ExecResult:
        """Run ``script`` with ``/bin/sh -c`` in the container, streaming its output in
        blocks of lines to ``on_output`` (or line by line to ``on_line``)."""
        self._refuse_if_closed()
        self._raise_for(limit_reached(self._request.cancel, self._deadline))
        cwd = container_path(work_dir) if work_dir is not None else self._default_dir
        argv = ["/bin/sh", "-c", _IN_DIR_SCRIPT, "conveyor", cwd, script]
        result = self._run(argv, self._environment(env), output_sink(on_line, on_output))
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
            with engine_errors():
                self._client.api.put_archive(self._id, parent, archive)

    def copy_out(self, src: str, dest: Path) -> None:
        """Copy a workspace file or directory out to the host path ``dest`` (get_archive)."""
        self._refuse_if_closed()
        source = container_path(src)
        if _surely_absent(self._host, source):
            raise SandboxError(f"{src} does not exist in the workspace")
        fd, name = tempfile.mkstemp(prefix="conveyor-copy-", suffix=".tar")
        archive = Path(name)
        try:
            with open(fd, "wb") as out:
                chunks, _stat = self._client.api.get_archive(self._id, source)
                spool(chunks, out)
            unpack(archive, Path(dest))
        except docker.errors.NotFound:
            raise SandboxError(f"{src} does not exist in the workspace") from None
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not copy {src}: {one_line(exc)}") from exc
        finally:
            archive.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the step's container (in the background); the workspace stays."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._removals.start(self._request.run_id, self._client.api, self._id)
        if self._watchdog is not None and self._watchdog.stdin is not None:
            # The removal is under way: the watchdog may go (it removes nothing then).
            with contextlib.suppress(OSError):
                self._watchdog.stdin.write(DONE)
                self._watchdog.stdin.flush()
            with contextlib.suppress(OSError):
                self._watchdog.stdin.close()
        if self._on_close is not None:
            self._on_close(self._id)

    def kill(self) -> None:
        """Kill the container: every command in it stops at once."""
        with contextlib.suppress(docker.errors.DockerException):  # stopped or removed already
            self._client.api.kill(self._id)

    def _run(self, argv: list[str], env: dict[str, str], sink: OutputSink | None) -> ExecResult:
        started = time.monotonic()
        lines = OutputSplitter(sink)
        api = self._client.api
        with engine_errors():
            exec_id = api.exec_create(self._id, argv, environment=env)["Id"]
            watcher = Watcher(self.kill, self._request.cancel, self._deadline)
            with watcher:
                for chunk in api.exec_start(exec_id, stream=True):
                    lines.feed(chunk)
            lines.flush()
            self._raise_for(watcher.reason)
            if self._closed:
                raise SandboxError("the sandbox was closed while a command ran")
            code = api.exec_inspect(exec_id)["ExitCode"]
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
        api = self._client.api
        with engine_errors():
            exec_id = api.exec_create(self._id, ["/bin/sh", "-c", _OOM_COUNTERS + " 2>/dev/null"])
            text = api.exec_start(exec_id["Id"]).decode("utf-8", errors="replace")
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


def _surely_absent(host: Path, path: str) -> bool:
    """True when ``path`` (under /workspace) is certainly missing from the workspace.

    Looked up on the host, one component at a time and never through a link: a link may
    point elsewhere in the container than on the host, and then only the engine knows.
    """
    current = host
    for part in posixpath.relpath(path, CONTAINER_WORKSPACE).split("/"):
        if part == ".":
            continue
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return False
