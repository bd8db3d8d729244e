"""Container images: the ``ImageEngine`` (provider ``docker``) and what it trades
(``BuildSpec``, ``BuiltImage``, ``ContainerResult``, ``RegistryAuth``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from conveyor.orchestrator.contracts.sandbox import LineSink, SandboxRequest


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry; the password never reaches a log or a repr."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BuildSpec:
    """One image build: a context directory on this host and the Dockerfile in it."""

    context: Path
    dockerfile: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()
    target: str | None = None
    pull: bool = False


@dataclass(frozen=True)
class BuiltImage:
    """What a build made: ``digest`` is the repo digest when there is one, else the id."""

    image_id: str
    digest: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ContainerResult:
    """How a container ended: ``exit_code`` is None when it was not waited for."""

    container_id: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    #: The streams (``stdout``, ``stderr``) that were longer than the cap and cut.
    cut: tuple[str, ...] = ()


@runtime_checkable
class ImageEngine(Protocol):
    """Builds, tags, pushes and runs images (provider ``docker``, via ``ctx.provider``).

    Every method streams progress lines to its sink, stops at ``deadline`` (a
    ``time.monotonic()`` value) or once ``cancel`` is set, and fails with one-line
    ``StepFailed`` messages.
    """

    def build(
        self,
        spec: BuildSpec,
        *,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> BuiltImage:
        """Build ``spec`` and apply its tags."""
        ...

    def tag(self, image: str, reference: str) -> None:
        """Give the local image ``image`` the name ``reference`` too."""
        ...

    def push(
        self,
        reference: str,
        *,
        auth: RegistryAuth | None,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> str:
        """Push ``reference`` (the engine's own credentials without ``auth``); its digest."""
        ...

    def run(
        self,
        request: SandboxRequest,
        *,
        command: Sequence[str] | None,
        workspace: Path | None,
        wait: bool = True,
        on_stdout: LineSink | None = None,
        on_stderr: LineSink | None = None,
    ) -> ContainerResult:
        """Run ``request.config.image`` (its own command without ``command``), then remove it.

        ``workspace`` (the run's directory on this host) is mounted at ``/workspace``.
        """
        ...
