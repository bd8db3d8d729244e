"""What ``step.artifact_pull`` fetches from: objects in a bucket (``ObjectSource``) and
URLs (``UrlSource``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from conveyor.orchestrator.artifacts.models import Artifact


@runtime_checkable
class ObjectSource(Protocol):
    """Objects in a bucket (the ``s3`` provider): what ``step.artifact_pull`` fetches.

    Region, endpoint and credentials are the operator's; a step names only the object.
    """

    def fetch(self, bucket: str, key: str, dest: Path, *, limit: int) -> Artifact:
        """Stream the object to ``dest``: all of it or nothing, at most ``limit`` bytes.

        Returns its size and SHA-256; ArtifactNotFound (no bucket, no object) or
        ArtifactError (denied, too large, unreachable) with a one-line reason otherwise.
        """
        ...


@runtime_checkable
class UrlSource(Protocol):
    """URLs to download (the ``http`` provider): what ``step.artifact_pull`` fetches.

    The network policy is the operator's (``allow_private_urls``); a step names only the
    URL and the size it may take.
    """

    def fetch(self, url: str, dest: Path, *, limit: int) -> int:
        """Stream the http(s) ``url`` to ``dest``, at most ``limit`` bytes; the bytes written.

        StepFailed with a one-line reason otherwise: another scheme, an address inside
        the network (or a redirect to one), too large, an HTTP error, unreachable.
        """
        ...
