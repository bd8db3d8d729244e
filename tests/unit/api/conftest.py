"""Fixtures for the API's contract tests: a Flask test client, no services but the store.

The store is ``db_store``: each test runs on SQLite and on Postgres (``[sqlite]``,
``[postgres]``), since cursor pagination, idempotency keys, metrics queries and log
following touch SQL that differs between them. Tokens and definitions are SQL only, so
the in-memory twin is not among them. Dispatches go to an in-memory dispatcher; a test
plays the worker by driving the runtime.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conveyor.api import create_app
from conveyor.api.services import Services
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Tokens
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import Broker


@pytest.fixture
def recorder() -> MemoryDispatcher:
    """What the API dispatched."""
    return MemoryDispatcher()


@pytest.fixture
def broker() -> Broker:
    """A broker check that can be turned off."""
    return Broker()


@pytest.fixture
def app(
    settings: Settings, db_store: SqlStore, recorder: MemoryDispatcher, broker: Broker
) -> Iterator[Flask]:
    """The API on the test's store."""
    yield create_app(settings, store=db_store, dispatcher=recorder, broker_check=broker.ping)


@pytest.fixture
def services(app: Flask) -> Services:
    """The objects behind the routes (for playing the worker)."""
    found: Services = app.extensions["conveyor"]
    return found


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the API."""
    return app.test_client()


def _bearer(store: SqlStore, role: str) -> dict[str, str]:
    _, secret = Tokens(store).create(f"{role}-bot", role)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def viewer(db_store: SqlStore) -> dict[str, str]:
    """Headers of a viewer's request."""
    return _bearer(db_store, "viewer")


@pytest.fixture
def operator(db_store: SqlStore) -> dict[str, str]:
    """Headers of an operator's request."""
    return _bearer(db_store, "operator")


@pytest.fixture
def admin(db_store: SqlStore) -> dict[str, str]:
    """Headers of an admin's request."""
    return _bearer(db_store, "admin")
