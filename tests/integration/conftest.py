"""Integration fixtures: the same store tests, on the real Postgres."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.store import Store


@pytest.fixture
def db_store(pg_store: Store) -> Store:
    """The store the shared store tests run against: this machine's Postgres."""
    return pg_store
