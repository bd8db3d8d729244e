"""``MemoryDispatcher``: the in-memory twin of a ``Dispatcher``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from conveyor.orchestrator.contracts import Dispatcher, StepRef


@dataclass
class MemoryDispatcher:
    """Remembers every step it was asked to send, in order, and sends none.

    A test plays the worker: it pops refs from ``sent`` and drives the runtime with them.
    """

    sent: list[tuple[StepRef, datetime | None]] = field(default_factory=list)

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Record ``ref`` (and when it was due)."""
        self.sent.append((ref, eta))


if TYPE_CHECKING:  # the twin answers to the same Protocol as the real thing
    _DISPATCHER: type[Dispatcher] = MemoryDispatcher
