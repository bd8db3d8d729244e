"""What every scanner provider shares: finding the local binary, reading JSON reports."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor.orchestrator.errors import ScanOutputError, StepFailed
from conveyor.orchestrator.scanning.scanner import Runner, ScanKind, ScanTarget
from conveyor.orchestrator.settings import Settings


class ScannerBase:
    """Shared behaviour; subclasses set ``name``, ``default_image``, ``kinds``, ``binary``."""

    name = ""
    default_image: str | None = None
    kinds: frozenset[ScanKind] = frozenset()
    #: The executable: its name on PATH locally, and its path in the official image.
    binary = ""
    image_binary = ""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def executable(self, target: ScanTarget) -> str:
        """The program to run: the image's binary, or the local one found on this host."""
        if target.runner is Runner.DOCKER:
            return self.image_binary or self.binary
        return local_binary(self.binary)

    def preflight(self, target: ScanTarget, env: Mapping[str, str]) -> None:
        """Nothing to check by default."""
        if target.kind not in self.kinds:
            kinds = ", ".join(sorted(k.value for k in self.kinds))
            raise StepFailed(f"{self.name} does not do {target.kind.value} scans (it does {kinds})")


def local_binary(name: str) -> str:
    """``name`` on PATH, else beside this Python (a scanner installed with Conveyor).

    The second place matters when Conveyor runs from a virtualenv nobody activated:
    ``pip install semgrep`` put the tool in the same ``bin`` directory as this Python.
    """
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise StepFailed(
        f"{name} is not installed on this host (runner: local looks on PATH and beside "
        f"Conveyor's Python): install it, or use runner: docker"
    )


def load_json(text: str, scanner: str) -> Any:
    """The report as JSON; ScanOutputError naming the scanner when it is not JSON."""
    if not text.strip():
        raise ScanOutputError(f"{scanner} wrote an empty report")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScanOutputError(f"{scanner}'s report is not JSON: {exc}") from exc


def expect(data: Any, kind: type, scanner: str, what: str) -> Any:
    """``data`` if it is a ``kind``; ScanOutputError saying what was expected otherwise."""
    if not isinstance(data, kind):
        raise ScanOutputError(f"{scanner}'s report has no {what}: is it {scanner} JSON?")
    return data


def relative(path: str) -> str:
    """A report's path as the workspace sees it: ``./src/a.py`` is ``src/a.py``."""
    while path.startswith("./"):
        path = path[2:]
    return path
