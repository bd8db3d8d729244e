"""Where a run's files are kept: the ``ArtifactStore`` (local disk, S3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from conveyor.orchestrator.artifacts.models import Artifact


class ArtifactStore(Protocol):
    """Files kept per run (local disk, S3): streamed, checksummed, all-or-nothing."""

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        """Store the file ``src`` under ``key``; a half-written upload is never visible."""
        ...

    def get(self, run_id: str, key: str, dest: Path) -> Artifact:
        """Write the artifact to ``dest``; a checksum mismatch is an error, not a file."""
        ...

    def open(self, run_id: str, key: str) -> tuple[Artifact, BinaryIO]:
        """The artifact and a stream of its content (for serving it)."""
        ...

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of a run, by key."""
        ...

    def delete(self, run_id: str, key: str) -> None:
        """Remove one artifact."""
        ...

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of a run; how many there were."""
        ...
