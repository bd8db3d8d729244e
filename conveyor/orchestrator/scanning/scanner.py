"""The Scanner seam: what a scanner provider (``scanner.semgrep``…) offers the scan steps.

A provider knows its tool's command line, for its official image and for a local
binary, and parses the tool's native JSON report into a ScanResult. The steps run the
command in a sandbox, read the report from a file in the workspace (never from stdout,
where logs and progress bars mix in), and do the rest: suppressions, baseline, gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from .results import ScanResult


class ScanKind(StrEnum):
    """What is scanned: source code, dependency manifests, or a container image."""

    SAST = "sast"
    DEPS = "deps"
    CONTAINER = "container"


class Runner(StrEnum):
    """Where a scanner runs: its image in the Docker sandbox, or a binary on this host."""

    DOCKER = "docker"
    LOCAL = "local"


@dataclass(frozen=True)
class ScanTarget:
    """One scan: what to scan, where the report goes, and the tool's options."""

    kind: ScanKind
    runner: Runner
    #: Relative to the workspace (the scanner's working directory): ``.``, ``src``.
    source_path: str = "."
    #: Relative to the workspace; the scanner writes its native JSON here.
    report_path: str = ".conveyor/scans/report.json"
    rules: tuple[str, ...] = ()
    target_image: str | None = None
    ignore_unfixed: bool = False
    #: The Docker network the scanner's container gets (None: none).
    network_mode: str | None = None


@dataclass(frozen=True)
class ScanCommand:
    """The argv to run in the workspace, its environment, and the exit codes that mean OK."""

    argv: tuple[str, ...]
    ok_exit_codes: frozenset[int] = frozenset({0})
    env: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Scanner(Protocol):
    """A scanner provider (entry-point group ``conveyor.providers``, ``scanner.<name>``)."""

    #: The tool's name (``semgrep``), as findings and reports carry it.
    name: str
    #: The official image the Docker runner uses unless a step names another.
    default_image: str | None
    #: The kinds of scan this tool does.
    kinds: frozenset[ScanKind]

    def command(self, target: ScanTarget) -> ScanCommand:
        """The command that scans ``target`` and writes the JSON report."""
        ...

    def preflight(self, target: ScanTarget, env: Mapping[str, str]) -> None:
        """Refuse a scan that cannot work here, with a clear StepFailed, before it runs."""
        ...

    def parse(self, text: str) -> ScanResult:
        """Parse the native JSON report; ScanOutputError when it is not one."""
        ...
