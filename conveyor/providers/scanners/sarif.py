"""Any tool that writes SARIF 2.1.0 (``scanner: sarif`` with ``command``).

The scan steps run the step's own command, which must write a SARIF log to the file
named by ``$CONVEYOR_SCAN_REPORT``; this provider reads it (see
``orchestrator.scanning.sarif_read`` for how severities are resolved).
"""

from __future__ import annotations

from conveyor.orchestrator.errors import SarifError, ScanOutputError, StepFailed
from conveyor.orchestrator.scanning import sarif_read
from conveyor.orchestrator.scanning.results import ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import ScanCommand, ScanKind, ScanTarget

from .base import ScannerBase, load_json


class Sarif(ScannerBase):
    """``scanner.sarif``: the generic scanner, for a command that writes SARIF."""

    name = "sarif"
    default_image = None
    kinds = frozenset(ScanKind)

    def command(self, target: ScanTarget) -> ScanCommand:
        """The generic scanner has no command of its own: the step's ``command`` is run."""
        raise StepFailed("scanner sarif needs a command that writes $CONVEYOR_SCAN_REPORT")

    def parse(self, text: str) -> ScanResult:
        """Every run of the SARIF log, merged into one result."""
        try:
            runs = sarif_read.parse(load_json(text, self.name))
        except SarifError as exc:
            raise ScanOutputError(f"the report is not SARIF: {exc}") from exc
        findings = [f for run in runs for f in run.findings]
        errors = [e for run in runs for e in run.errors]
        name = runs[0].scanner if len(runs) == 1 else self.name
        version = runs[0].scanner_version if len(runs) == 1 else None
        return build_result(name, findings, version=version, errors=errors)
