"""What a scan is compared with: the baseline run, and the ledger steps record into.

``FindingsLedger`` is the seam (``ctx.findings``); ``store.findings.StoreLedger`` is the real one
on the execution store and ``MemoryLedger`` below is its in-memory twin for tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .results import ScanResult


@dataclass(frozen=True)
class Baseline:
    """The run a scan is compared with, and the fingerprints of its findings."""

    run_id: str
    fingerprints: frozenset[str]


class FindingsLedger(Protocol):
    """Where a scan step records its findings and finds its baseline (``ctx.findings``)."""

    def baseline(self, branch: str | None) -> Baseline | None:
        """The newest earlier succeeded run of this pipeline on ``branch`` with a scan."""
        ...

    def record(self, result: ScanResult, branch: str | None) -> None:
        """Replace this step's findings (a retry's findings replace the attempt's before)."""
        ...


@dataclass
class MemoryLedger:
    """The in-memory twin of StoreLedger: earlier runs are given, recordings are kept."""

    #: Earlier succeeded runs, oldest first: (run id, branch, fingerprints).
    history: list[tuple[str, str | None, frozenset[str]]] = field(default_factory=list)
    recorded: list[tuple[ScanResult, str | None]] = field(default_factory=list)

    def add_run(self, run_id: str, branch: str | None, prints: Iterable[str]) -> None:
        """Add an earlier succeeded run of the pipeline."""
        self.history.append((run_id, branch, frozenset(prints)))

    def baseline(self, branch: str | None) -> Baseline | None:
        """The newest given run on ``branch``."""
        for run_id, on, prints in reversed(self.history):
            if on == branch:
                return Baseline(run_id, prints)
        return None

    def record(self, result: ScanResult, branch: str | None) -> None:
        """Keep the result."""
        self.recorded.append((result, branch))
