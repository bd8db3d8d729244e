"""The API on a real store for hostile-input tests: import the fixtures into a test module.

``api`` is the Flask app on ``db_store`` (SQLite and Postgres in turn: Postgres refuses
values SQLite takes, NUL characters first); ``admin`` is an admin's request headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conveyor.api import create_app
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Tokens
from conveyor.orchestrator.testing import MemoryDispatcher

API = "/api/v1"
RUNS = f"{API}/runs"
PIPELINES = f"{API}/pipelines"
ONE_STEP = """\
pipelines:
  tiny:
    steps:
      - {name: only, type: step.log, config: {message: hi}}
"""

Headers = dict[str, str]


@pytest.fixture
def api(settings: Settings, db_store: SqlStore) -> Flask:
    """The API on the test's store; what it dispatches goes nowhere."""
    return create_app(settings, store=db_store, dispatcher=MemoryDispatcher())


@pytest.fixture
def client(api: Flask) -> FlaskClient:
    """A test client of the API."""
    return api.test_client()


@pytest.fixture
def admin(db_store: SqlStore) -> Headers:
    """Headers of an admin's request."""
    _, secret = Tokens(db_store).create("admin-bot", "admin")
    return {"Authorization": f"Bearer {secret}"}


def json_of(answer: Any) -> dict[str, Any]:
    """The JSON object of an answer, asserting it is JSON."""
    assert answer.is_json, (answer.status_code, answer.data[:300])
    data: dict[str, Any] = answer.json
    return data


def raw_post(client: FlaskClient, path: str, text: str, headers: Mapping[str, str]) -> Any:
    """POST ``text`` as a JSON body, byte for byte (NaN, ``\\ud800``... as written)."""
    return client.post(
        path,
        data=text.encode("utf-8", "surrogatepass"),
        headers={**headers, "Content-Type": "application/json"},
    )
