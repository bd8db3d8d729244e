"""Fixtures of the hostile-input tests: the API on a real store.

``api`` is the Flask app on ``db_store`` (SQLite and Postgres in turn: Postgres refuses
values SQLite takes, NUL characters first); ``admin`` is an admin's request headers.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conveyor.api import create_app
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Tokens
from conveyor.orchestrator.testing import MemoryDispatcher


@pytest.fixture
def api(settings: Settings, db_store: SqlStore) -> Flask:
    """The API on the test's store; what it dispatches goes nowhere."""
    return create_app(settings, store=db_store, dispatcher=MemoryDispatcher())


@pytest.fixture
def client(api: Flask) -> FlaskClient:
    """A test client of the API."""
    return api.test_client()


@pytest.fixture
def admin(db_store: SqlStore) -> dict[str, str]:
    """Headers of an admin's request."""
    _, secret = Tokens(db_store).create("admin-bot", "admin")
    return {"Authorization": f"Bearer {secret}"}
