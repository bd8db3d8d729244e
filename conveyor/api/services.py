"""What the API's handlers work with, built once by ``create_app`` and handed to each call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.engine import Runtime
from conveyor.orchestrator.errors import PluginError
from conveyor.orchestrator.pipeline import Compiler
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import Definitions, SqlStore, Tokens

#: Raises when the broker cannot be reached; what it returns is ignored.
BrokerCheck = Callable[[], object]


@dataclass(frozen=True)
class Services:
    """The store and the orchestrator objects behind every route."""

    settings: Settings
    store: SqlStore
    compiler: Compiler
    runtime: Runtime
    definitions: Definitions
    tokens: Tokens
    broker_check: BrokerCheck | None = None
    #: How often a follower of a step's log looks for new lines (seconds).
    poll_seconds: float = 0.25
    #: Makes the artifact store on first use (local or S3, as the settings say).
    artifact_store: Callable[[], ArtifactStore] | None = None

    def artifacts(self) -> ArtifactStore:
        """The artifact store."""
        if self.artifact_store is None:
            raise PluginError("no artifact store is configured")
        return self.artifact_store()
