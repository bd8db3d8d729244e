"""A StepContext for unit tests of steps: the orchestrator's twins, real local sandboxes.

The twins themselves ship in ``conveyor.orchestrator.testing``; this context needs the
local providers too, which the orchestrator may not import, so it lives here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.orchestrator.contracts import Sandbox, SandboxConfig, SandboxRequest
from conveyor.orchestrator.plugins import Providers
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing import MemoryLedger, MemoryLogger
from conveyor.providers.local import LocalArtifactStore, LocalSandboxFactory


@dataclass
class FakeContext:
    """A ``StepContext`` whose sandboxes are real local ones under ``data_dir``."""

    data_dir: Path
    run_id: str = "run-1"
    step_key: str = "build"
    attempt: int = 1
    pipeline: str = "ci"
    params: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    matrix: Mapping[str, Any] = field(default_factory=dict)
    log: MemoryLogger = field(default_factory=MemoryLogger)
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    #: Findings scan steps record, and the earlier runs their baseline comes from.
    findings: MemoryLedger = field(default_factory=MemoryLedger)

    @property
    def settings(self) -> Settings:
        """Settings that keep every workspace under ``data_dir``."""
        return Settings(data_dir=self.data_dir)

    @property
    def workspace(self) -> Path:
        """The host directory of this run's workspace."""
        return self.settings.workspace_root / self.run_id

    @property
    def idempotency_key(self) -> str:
        """``run_id:step_key``."""
        return f"{self.run_id}:{self.step_key}"

    @property
    def cancelled(self) -> bool:
        """True once cancelled or past the deadline."""
        return self.cancel.is_set() or (self.remaining() or 1) <= 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def sandbox(self, config: SandboxConfig) -> Sandbox:
        """Open a real local sandbox for this step."""
        request = SandboxRequest(self.run_id, self.step_key, config, self.cancel, self.deadline)
        return LocalSandboxFactory(self.settings).open(request)

    @property
    def artifacts(self) -> LocalArtifactStore:
        """A real local artifact store under ``data_dir``."""
        return LocalArtifactStore(self.settings)

    def provider(self, name: str) -> Any:
        """Providers installed in this environment, built with this context's settings."""
        return Providers(self.settings).get(name)

    def mask(self, text: str) -> str:
        """Replace secret values with ``***``."""
        for secret in self.secrets.values():
            text = text.replace(secret, "***")
        return text
