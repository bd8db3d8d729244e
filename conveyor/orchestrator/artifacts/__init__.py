"""Artifacts as data: their model, key rules, checksums, and retention.

Its public face is below (the retention rules read the store, so they load on first use).
"""

from typing import TYPE_CHECKING

from conveyor.orchestrator.faces import lazy

if TYPE_CHECKING:
    from conveyor.orchestrator.artifacts.models import Artifact as Artifact
    from conveyor.orchestrator.artifacts.models import chunks as chunks
    from conveyor.orchestrator.artifacts.models import copy_hashed as copy_hashed
    from conveyor.orchestrator.artifacts.models import hash_stream as hash_stream
    from conveyor.orchestrator.artifacts.models import validate_digest as validate_digest
    from conveyor.orchestrator.artifacts.models import validate_key as validate_key
    from conveyor.orchestrator.artifacts.models import validate_run_id as validate_run_id
    from conveyor.orchestrator.artifacts.retention import ArtifactRetention as ArtifactRetention
    from conveyor.orchestrator.artifacts.retention import describe as describe
    from conveyor.orchestrator.artifacts.retention import expiry as expiry
    from conveyor.orchestrator.artifacts.retention import explain_missing as explain_missing

__getattr__ = lazy(
    __name__,
    {
        "models": [
            "Artifact",
            "chunks",
            "copy_hashed",
            "hash_stream",
            "validate_digest",
            "validate_key",
            "validate_run_id",
        ],
        "retention": ["ArtifactRetention", "describe", "expiry", "explain_missing"],
    },
)
