"""``step.scan_deps``: known vulnerabilities in the workspace's dependencies.

The seed's keys (``scanner``, ``image``, ``source_path``, ``fail_on_severity``,
``output_format``) plus the shared ones (see ``config``). Scanners: ``grype``
(default), ``pip-audit``, ``osv-scanner``, ``trivy``. For pip-audit, ``source_path``
may name a requirements file (``requirements.txt``) instead of a project directory.
Vulnerability databases come from the network: give the scanner one (network_mode)
or an image that carries its database.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from conveyor.orchestrator.contracts import StepContext
from conveyor.orchestrator.queues import SCAN
from conveyor.orchestrator.scanning.scanner import ScanKind
from conveyor.orchestrator.scanning.severity import Severity

from .config import ScanConfig, SourcePath, Threshold
from .job import ScanJob, scan


class ScanDepsConfig(ScanConfig):
    """Configuration of ``step.scan_deps``."""

    scanner: Literal["grype", "pip-audit", "osv-scanner", "trivy", "sarif"] = Field(
        default="grype", description="grype, pip-audit, osv-scanner or trivy."
    )
    source_path: SourcePath = Field(
        default="/workspace", description="Project (or requirements file) to audit."
    )
    fail_on_severity: Threshold = Field(
        default=Severity.HIGH,
        description="Lowest severity that fails the step: critical, high, medium, low, info.",
    )
    ignore_unfixed: bool = Field(
        default=False, description="Leave out vulnerabilities that have no fixed version."
    )


class ScanDeps:
    """Audits dependencies for known vulnerabilities and gates on what it finds."""

    Config: type[BaseModel] = ScanDepsConfig
    queue = SCAN
    shell_fields = frozenset({"command"})

    def run(self, ctx: StepContext, config: ScanDepsConfig) -> dict[str, Any]:
        """Scan; outputs ``scan_result``, ``summary``, ``passed_gate``, ``command``, ``image``."""
        job = ScanJob(
            kind=ScanKind.DEPS,
            scanner=config.scanner,
            threshold=config.fail_on_severity,
            source_path=config.source_path,
            ignore_unfixed=config.ignore_unfixed,
        )
        return scan(ctx, config, job)
