"""``MemoryLogger``: the in-memory twin of a step's ``StepLogger``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.orchestrator.contracts import StepLogger


@dataclass
class MemoryLogger:
    """Keeps every logged line in memory, with the stream it went to."""

    records: list[tuple[str, str]] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        """The logged texts, in order."""
        return [text for _, text in self.records]

    def line(self, text: str, stream: str = "stdout") -> None:
        """Record one line."""
        self.records.append((stream, text))

    def write(self, block: str, stream: str = "stdout") -> None:
        """Record each line of a block."""
        text = block[:-1] if block.endswith("\n") else block
        self.records += [(stream, line) for line in text.split("\n")]

    def flush(self) -> None:
        """Nothing is buffered."""


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real thing
    _LOGGER: type[StepLogger] = MemoryLogger
