"""``step.scan_sast``: static analysis of the workspace's code (Semgrep, Bandit, SARIF).

The seed's keys (``scanner``, ``image``, ``source_path``, ``rules``,
``fail_on_severity``, ``output_format``) plus the ones every scan step shares (see
``config``). ``fail_on_severity`` takes Semgrep's words (``error``, ``warning``,
``info``) or the scale's (``critical`` … ``info``), mapped by the one severity table.
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


class ScanSastConfig(ScanConfig):
    """Configuration of ``step.scan_sast``."""

    scanner: Literal["semgrep", "bandit", "sarif"] = Field(
        description="semgrep, bandit, or sarif (a command that writes SARIF)."
    )
    source_path: SourcePath = Field(
        default="/workspace", description="Code to scan: under /workspace, or relative to it."
    )
    rules: list[str] = Field(
        default_factory=list,
        description="Semgrep configs: rule files or directories in the workspace, or registry "
        "names such as p/owasp-top-ten (these need the network). Bandit: one config file.",
    )
    fail_on_severity: Threshold = Field(
        default=Severity.HIGH,
        description="Lowest severity that fails the step: error, warning, info, or "
        "critical, high, medium, low.",
    )


class ScanSast:
    """Runs a SAST scanner over the workspace and gates on what it finds."""

    Config: type[BaseModel] = ScanSastConfig
    queue = SCAN
    shell_fields = frozenset({"command"})

    def run(self, ctx: StepContext, config: ScanSastConfig) -> dict[str, Any]:
        """Scan; outputs ``scan_result``, ``summary``, ``passed_gate``, ``command``, ``image``."""
        job = ScanJob(
            kind=ScanKind.SAST,
            scanner=config.scanner,
            threshold=config.fail_on_severity,
            source_path=config.source_path,
            rules=tuple(config.rules),
        )
        return scan(ctx, config, job)
