"""``MemoryImageEngine``: the in-memory twin of an ``ImageEngine`` (provider ``docker``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.contracts import (
    BuildSpec,
    BuiltImage,
    ContainerResult,
    ImageEngine,
    LineSink,
    RegistryAuth,
    SandboxRequest,
)


@dataclass
class MemoryImageEngine:
    """Records what it is asked to build, tag, push and run, and answers as told.

    Builds make ``image_id`` (their digest too, as an image never pushed has no repo
    digest) and stream ``build_log``; pushes answer ``digest``; runs end as ``result``
    says, streaming its stdout and stderr lines. Nothing is built and nothing runs.
    """

    #: Every build asked for, in order.
    builds: list[BuildSpec] = field(default_factory=list)
    #: Every (image, reference) tag asked for.
    tags: list[tuple[str, str]] = field(default_factory=list)
    #: Every (reference, auth) push asked for.
    pushes: list[tuple[str, RegistryAuth | None]] = field(default_factory=list)
    #: Every run asked for: its ``request``, ``command`` and ``workspace``.
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: How every run ends (when it is waited for).
    result: ContainerResult = field(
        default_factory=lambda: ContainerResult("c0ffee" * 10, 0, "out\n", "err\n")
    )
    #: The id of every image built.
    image_id: str = "sha256:" + "1" * 64
    #: The digest every push answers.
    digest: str = "sha256:" + "2" * 64
    #: The progress lines every build streams.
    build_log: tuple[str, ...] = ("Step 1/1 : FROM scratch",)

    def build(
        self,
        spec: BuildSpec,
        *,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> BuiltImage:
        """Record ``spec``, stream ``build_log``; the image ``image_id`` with its tags."""
        self.builds.append(spec)
        if on_line:
            for text in self.build_log:
                on_line(text)
        return BuiltImage(self.image_id, self.image_id, spec.tags)

    def tag(self, image: str, reference: str) -> None:
        """Record the tag."""
        self.tags.append((image, reference))

    def push(
        self,
        reference: str,
        *,
        auth: RegistryAuth | None,
        cancel: threading.Event,
        deadline: float | None,
        on_line: LineSink | None = None,
    ) -> str:
        """Record the push (with its credentials); ``digest``."""
        self.pushes.append((reference, auth))
        return self.digest

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
        """Record the run; ``result`` with its lines streamed, or no exit code unwaited."""
        self.runs.append({"request": request, "command": command, "workspace": workspace})
        if not wait:
            return ContainerResult(self.result.container_id, None)
        for text in self.result.stdout.splitlines():
            if on_stdout:
                on_stdout(text)
        for text in self.result.stderr.splitlines():
            if on_stderr:
                on_stderr(text)
        return self.result


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real thing
    _ENGINE: type[ImageEngine] = MemoryImageEngine
