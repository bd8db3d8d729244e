"""In-memory twins of the orchestrator's Protocols, shipped for tests (ours and yours).

Each answers to the same Protocol in ``conveyor.orchestrator.contracts`` as the real
thing and keeps its semantics, without a database, a broker or a network:

- ``MemoryStore``: the execution store (``Store``), with its run transaction
  (``MemoryRunTx``: locks, status guard, attempt fencing, gap-free events, rollback).
- ``MemoryDispatcher``: a ``Dispatcher`` that records what it was asked to send.
- ``MemoryLogger``: a step's ``StepLogger``, keeping the lines.
- ``MemoryLedger``: the findings ledger of a scan step (from ``scanning.history``).
- ``MemoryImageEngine``: an ``ImageEngine`` (provider ``docker``) that records builds,
  tags, pushes and runs, and answers as told.
- ``MemoryObjects``: an ``ObjectSource`` (provider ``s3``) over a dict of objects.
- ``MemoryWeb``: a ``UrlSource`` (provider ``http``) over a dict of pages.

Nothing here imports SQLAlchemy, so a test of the engine on the twin loads no driver.
"""

from conveyor.orchestrator.scanning.history import MemoryLedger
from conveyor.orchestrator.testing.dispatch import MemoryDispatcher
from conveyor.orchestrator.testing.images import MemoryImageEngine
from conveyor.orchestrator.testing.logger import MemoryLogger
from conveyor.orchestrator.testing.objects import MemoryObjects
from conveyor.orchestrator.testing.store import MemoryStore
from conveyor.orchestrator.testing.transaction import MemoryRunTx
from conveyor.orchestrator.testing.web import MemoryWeb

__all__ = [
    "MemoryDispatcher",
    "MemoryImageEngine",
    "MemoryLedger",
    "MemoryLogger",
    "MemoryObjects",
    "MemoryRunTx",
    "MemoryStore",
    "MemoryWeb",
]
