"""Container chores the Docker sandbox and the Docker engine provider share: removal
(now or in the background), a watcher that kills at the deadline or on cancel, and the
short container that deletes what the worker may not.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
from docker.types import Mount

from conveyor.orchestrator.errors import SandboxError

from ..sandbox_common import CONTAINER_WORKSPACE, POLL, limit_reached
from .client import one_line

log = logging.getLogger("conveyor.docker")
# Deletes everything in the workspace, dot files included, without failing on a glob
# that matched nothing.
_WIPE = "cd /workspace && rm -rf -- * .[!.]* ..?* 2>/dev/null; ls -A | head -n 3"


def remove_container(api: docker.APIClient, container_id: str) -> None:
    """Remove a container, running or not; nothing happens when it is gone already."""
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        pass  # removed already: what was asked for is done
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise SandboxError(f"could not remove a container: {one_line(exc)}") from exc


class Removals:
    """Containers being removed in the background, by run, so cleanup can wait for them.

    The threads are not daemons: the process waits for a removal begun before it exits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[str, list[threading.Thread]] = {}

    def start(self, run_id: str, api: docker.APIClient, container_id: str) -> None:
        """Begin removing ``container_id``; return at once."""
        thread = threading.Thread(
            target=self._remove, args=(api, container_id), name="conveyor-docker-rm"
        )
        with self._lock:
            alive = [t for t in self._threads.get(run_id, []) if t.is_alive()]
            self._threads[run_id] = [*alive, thread]
        thread.start()

    def wait(self, run_id: str) -> None:
        """Wait until every removal begun for ``run_id`` has ended."""
        with self._lock:
            threads = self._threads.pop(run_id, [])
        for thread in threads:
            thread.join()

    @staticmethod
    def _remove(api: docker.APIClient, container_id: str) -> None:
        try:
            remove_container(api, container_id)
        except Exception as exc:  # the run's cleanup removes what is left by label
            log.warning("container %s: %s", container_id[:12], exc)


class Watcher:
    """Calls ``kill`` once the deadline passes or the cancel flag is set (a context)."""

    def __init__(
        self, kill: Callable[[], None], cancel: threading.Event, deadline: float | None
    ) -> None:
        self.reason: str | None = None
        self._kill = kill
        self._cancel = cancel
        self._deadline = deadline
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="conveyor-docker-watch", daemon=True
        )

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(POLL):
            self.reason = limit_reached(self._cancel, self._deadline)
            if self.reason is not None:
                self._kill()
                return


def wipe_directory(api: docker.APIClient, image: str, host: Path) -> None:
    """Delete the contents of ``host`` from a short container of ``image`` (as root)."""
    config = api.create_host_config(
        mounts=[Mount(CONTAINER_WORKSPACE, str(host), type="bind")],
        network_mode="none",
        security_opt=["no-new-privileges"],
    )
    try:
        created = api.create_container(
            image, ["/bin/sh", "-c", _WIPE], user="0:0", host_config=config
        )
        try:
            api.start(created["Id"])
            api.wait(created["Id"], timeout=120)
            left = api.logs(created["Id"]).decode("utf-8", errors="replace").split()
        finally:
            with contextlib.suppress(SandboxError):
                remove_container(api, created["Id"])
    except docker.errors.DockerException as exc:
        raise SandboxError(f"could not remove the workspace {host}: {one_line(exc)}") from exc
    if left:
        raise SandboxError(f"could not remove the workspace {host}: {', '.join(left)} remain")
