"""Unit-test fixtures: the store under test is SQLite."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.store import Store


@pytest.fixture
def db_store(store: Store) -> Store:
    """The store the shared store tests run against (SQLite here, Postgres in integration/)."""
    return store
