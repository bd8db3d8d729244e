"""What the Docker sandbox and the Docker engine provider share: the client, labels,
the run's workspace directory and the translation of the SDK's errors.

The run's workspace is one directory on the worker's host (``workspace_root/<run id>``)
for local and container steps alike: containers get it bind-mounted at ``/workspace``.
The engine must therefore see the worker's filesystem at the same path: a local engine
does; a Docker-in-Docker sidecar needs the data directory mounted at the same path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import docker
import docker.errors

from conveyor.orchestrator.errors import SandboxError, StepFailed
from conveyor.orchestrator.settings import Settings

from ..sandbox_common import RUN_ID

RUN_LABEL = "conveyor.run"
STEP_LABEL = "conveyor.step"


class Pingable(Protocol):
    """A Docker SDK client: ``DockerClient`` and ``APIClient`` both answer ``ping``."""

    def ping(self) -> bool:
        """True when the engine answers; DockerException otherwise."""
        ...


C = TypeVar("C", bound=Pingable)


class EngineClient(Generic[C]):
    """A client of the engine the Docker CLI would use (DOCKER_HOST), made on first use."""

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._client: C | None = None
        self._lock = threading.Lock()

    @property
    def made(self) -> C | None:
        """The client if one was made (the engine answered), else None."""
        return self._client

    def get(self) -> C:
        """A client of an engine that answers; SandboxError with the reason otherwise."""
        with self._lock:
            if self._client is None:
                try:
                    client = self._make()
                    client.ping()
                except docker.errors.DockerException as exc:
                    raise SandboxError(
                        f"the Docker engine is unreachable: {one_line(exc)}"
                    ) from exc
                self._client = client
            return self._client


def docker_client() -> docker.DockerClient:
    """A high-level client from the environment, without per-request proxy look-ups."""
    client = docker.from_env()
    quiet_environment(client.api)
    return client


def quiet_environment(api: docker.APIClient) -> None:
    """Skip the proxy look-ups requests makes on every call when the engine is local.

    requests reads the whole environment for proxy settings on each request, a few
    milliseconds of CPU that a step pays five times over; no proxy reaches a unix socket.
    """
    if str(api.base_url).startswith("http+docker://"):
        api.trust_env = False


def workspace_dir(settings: Settings, run_id: str) -> Path:
    """The run's workspace on this host, as an absolute path (the engine needs one)."""
    if not RUN_ID.fullmatch(run_id):
        raise SandboxError(f"run id {run_id!r} cannot name a workspace directory")
    return (settings.workspace_root / run_id).resolve()


def one_line(exc: BaseException) -> str:
    """An error's text on one line, as a step's error shows it."""
    return " ".join(str(exc).split())


def image_missing(name: str) -> StepFailed:
    """The error for an image the engine does not have."""
    return SandboxError(f"image {name} is not on this Docker engine (build or pull it first)")


@contextlib.contextmanager
def engine_errors(what: str = "the Docker engine failed") -> Iterator[None]:
    """Translate the SDK's errors into SandboxError at the boundary."""
    try:
        yield
    except docker.errors.DockerException as exc:
        raise SandboxError(f"{what}: {one_line(exc)}") from exc
