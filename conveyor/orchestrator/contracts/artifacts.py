"""Where a run's files are kept: the ``ArtifactStore`` (local disk, S3)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

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


@runtime_checkable
class RunSources(Protocol):
    """A store that also keeps a run's source archive (``conveyor submit --source``).

    The archive lives beside the run's artifacts where no artifact key can reach it
    (keys start with a letter or digit), is not listed among them, and goes with
    them: ``delete_run`` removes it too.
    """

    def put_source(self, run_id: str, src: Path) -> Artifact:
        """Store the archive ``src`` as the run's source; all-or-nothing."""
        ...

    def open_source(self, run_id: str) -> tuple[Artifact, BinaryIO]:
        """The run's source archive and a stream of it (``ArtifactNotFound``: none)."""
        ...

    def delete_source(self, run_id: str) -> None:
        """Remove the run's source archive; nothing happens when there is none."""
        ...


@runtime_checkable
class WorkspaceBlobs(Protocol):
    """A store that also keeps a run's workspace between hosts, content-addressed.

    Blobs (file contents), packs (many small contents end to end, stored as one object)
    and manifests (what a workspace holds, and where in which pack) are named by their
    SHA-256 and live beside the run's artifacts where no key can reach them, as the
    source archive does: never listed as artifacts, removed by ``delete_run``. Each is
    on disk (or in the bucket) once its call returns, as an artifact is after ``put``.
    """

    def missing_blobs(self, run_id: str, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` the store does not hold for the run."""
        ...

    def put_blob(self, run_id: str, digest: str, src: Path) -> None:
        """Store the file ``src`` as the blob ``digest``; never visible half-written."""
        ...

    def open_blob(self, run_id: str, digest: str) -> BinaryIO:
        """A stream of the blob (``ArtifactNotFound``: none); the reader checks its hash."""
        ...

    def put_pack(self, run_id: str, data: bytes) -> str:
        """Store ``data`` as a pack named by its SHA-256, which it returns; all-or-nothing."""
        ...

    def read_pack(self, run_id: str, digest: str, start: int, length: int) -> bytes:
        """``length`` bytes of the pack ``digest`` from ``start`` (fewer where it ends;
        ``ArtifactNotFound``: no such pack); the reader checks each content's hash."""
        ...

    def put_manifest(self, run_id: str, digest: str, data: bytes) -> None:
        """Store a workspace manifest under its digest; all-or-nothing."""
        ...

    def get_manifest(self, run_id: str, digest: str) -> bytes:
        """The manifest stored under ``digest`` (``ArtifactNotFound``: none)."""
        ...

    def delete_workspace(self, run_id: str) -> int:
        """Remove the run's blobs, packs and manifests (its artifacts stay); how many went."""
        ...
