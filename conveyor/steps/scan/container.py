"""``step.scan_container``: known vulnerabilities in a container image (Trivy, Grype).

The seed's keys (``target_image``, ``scanner``, ``severity_threshold``,
``ignore_unfixed``, ``output_format``) plus the shared ones (see ``config``).
``severity_threshold`` is the gate: findings below it are still reported and stored.
``target_image`` is an image reference, or an image archive in the workspace
(``image.tar``, as ``docker save`` writes it). In the Docker runner there is no daemon
to ask, so a reference is read from its registry (which needs network_mode).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from conveyor.orchestrator.contracts import StepContext
from conveyor.orchestrator.queues import SCAN
from conveyor.orchestrator.scanning.scanner import ScanKind
from conveyor.orchestrator.scanning.severity import Severity

from .config import ScanConfig, Threshold
from .job import ScanJob, scan


class ScanContainerConfig(ScanConfig):
    """Configuration of ``step.scan_container``."""

    target_image: str = Field(min_length=1, description="Image to scan, e.g. `myapp:latest`.")
    scanner: Literal["trivy", "grype", "sarif"] = Field(
        default="trivy", description="trivy or grype."
    )
    severity_threshold: Threshold = Field(
        default=Severity.HIGH,
        description="Lowest severity that fails the step: CRITICAL, HIGH, MEDIUM, LOW, INFO.",
    )
    ignore_unfixed: bool = Field(
        default=False, description="Leave out vulnerabilities that have no fixed version."
    )


class ScanContainer:
    """Scans an image for vulnerabilities and gates on what it finds."""

    Config: type[BaseModel] = ScanContainerConfig
    queue = SCAN
    shell_fields = frozenset({"command"})

    def run(self, ctx: StepContext, config: ScanContainerConfig) -> dict[str, Any]:
        """Scan; outputs ``scan_result``, ``summary``, ``passed_gate``, ``command``, ``image``,
        ``target_image``."""
        job = ScanJob(
            kind=ScanKind.CONTAINER,
            scanner=config.scanner,
            threshold=config.severity_threshold,
            target_image=config.target_image,
            ignore_unfixed=config.ignore_unfixed,
        )
        return {**scan(ctx, config, job), "target_image": config.target_image}
