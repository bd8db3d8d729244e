"""``MemoryObjects``: the in-memory twin of an ``ObjectSource`` (provider ``s3``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.orchestrator.artifacts.models import Artifact
from conveyor.orchestrator.contracts import ObjectSource
from conveyor.orchestrator.errors import ArtifactNotFound


@dataclass
class MemoryObjects:
    """A bucket's objects in a dict, by (bucket, key); remembers every fetch asked for.

    Fetched artifacts carry the checksum ``checksum`` whatever their content, so a
    test can tell it came through; ``limit`` is recorded, not enforced.
    """

    #: The content of each object, by (bucket, key).
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Every fetch asked for: (bucket, key, limit).
    asked: list[tuple[str, str, int]] = field(default_factory=list)
    #: The checksum every fetched artifact reports.
    checksum: str = "c0ffee"

    def fetch(self, bucket: str, key: str, dest: Path, *, limit: int) -> Artifact:
        """Write the object to ``dest``; ArtifactNotFound when there is none."""
        self.asked.append((bucket, key, limit))
        if (bucket, key) not in self.objects:
            raise ArtifactNotFound(f"s3://{bucket}/{key}: no such object")
        content = self.objects[bucket, key]
        dest.write_bytes(content)
        return Artifact(key, len(content), self.checksum, datetime.now(UTC))


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real thing
    _SOURCE: type[ObjectSource] = MemoryObjects
