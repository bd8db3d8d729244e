"""``MemoryWeb``: the in-memory twin of a ``UrlSource`` (provider ``http``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.orchestrator.contracts import UrlSource
from conveyor.orchestrator.errors import StepFailed


@dataclass
class MemoryWeb:
    """Pages in a dict, by URL; remembers every download asked for.

    No network and no policy: any URL it holds is served, and ``limit`` is recorded,
    not enforced.
    """

    #: The content of each page, by URL.
    pages: dict[str, bytes] = field(default_factory=dict)
    #: Every download asked for: (url, limit).
    asked: list[tuple[str, int]] = field(default_factory=list)

    def fetch(self, url: str, dest: Path, *, limit: int) -> int:
        """Write the page to ``dest``; the bytes written, or StepFailed (HTTP 404) if none."""
        self.asked.append((url, limit))
        if url not in self.pages:
            raise StepFailed(f"{url}: HTTP 404 Not Found")
        dest.write_bytes(self.pages[url])
        return len(self.pages[url])


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real thing
    _SOURCE: type[UrlSource] = MemoryWeb
