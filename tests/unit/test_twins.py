"""Every in-memory twin in ``conveyor.orchestrator.testing`` answers to its Protocol.

The annotated assignments are the static check (mypy); the ``isinstance`` calls check
the runtime-checkable Protocols' members as the runtime sees them.
"""

from __future__ import annotations

import subprocess
import sys

from conveyor.orchestrator.contracts import (
    Dispatcher,
    ImageEngine,
    ObjectSource,
    RunTransaction,
    StepLogger,
    Store,
    UrlSource,
)
from conveyor.orchestrator.scanning.history import FindingsLedger
from conveyor.orchestrator.testing import (
    MemoryDispatcher,
    MemoryImageEngine,
    MemoryLedger,
    MemoryLogger,
    MemoryObjects,
    MemoryRunTx,
    MemoryStore,
    MemoryWeb,
)


def test_every_twin_satisfies_its_protocol() -> None:
    store: Store = MemoryStore()
    dispatcher: Dispatcher = MemoryDispatcher()
    logger: StepLogger = MemoryLogger()
    ledger: FindingsLedger = MemoryLedger()
    engine: ImageEngine = MemoryImageEngine()
    objects: ObjectSource = MemoryObjects()
    web: UrlSource = MemoryWeb()
    transaction: type[RunTransaction] = MemoryRunTx

    assert isinstance(store, Store)
    assert isinstance(engine, ImageEngine)
    assert isinstance(objects, ObjectSource)
    assert isinstance(web, UrlSource)
    assert all(twin is not None for twin in (dispatcher, logger, ledger, transaction))


def test_the_twins_and_the_contracts_load_no_sql_driver() -> None:
    """Given a fresh interpreter, importing the Protocols and the twins loads no SQLAlchemy."""
    code = (
        "import sys, conveyor.orchestrator.contracts, conveyor.orchestrator.testing;"
        "assert 'sqlalchemy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
