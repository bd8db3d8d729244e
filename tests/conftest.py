"""Shared fixtures: settings, and the execution store in memory, on SQLite and on Postgres.

``store`` is every store the engine runs on, one after the other: a test that takes it
(or a fixture built on it) runs as ``[memory]``, ``[sqlite]`` and ``[postgres]``.
``db_store`` is the SQL ones only, ``[sqlite]`` and ``[postgres]``: for what only SQL
has (migrations, the driver's errors, tokens, definitions, findings, the API). The
Postgres runs are marked ``postgres``; without a server they skip, and under CI fail.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.schema import metadata
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryStore

PG_ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: The fixture behind each store parameter.
STORE_FIXTURES = {"memory": "memory_store", "sqlite": "sqlite_store", "postgres": "pg_store"}
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def missing(component: str, reason: str) -> NoReturn:
    """Skip on a laptop without ``component``; fail under CI, where a skip proves nothing."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{component} is required under CI: {reason}")
    pytest.skip(f"{component} not available: {reason}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh data directory and fast timers."""
    return Settings(data_dir=tmp_path / "data", heartbeat_seconds=0.5, log_flush_seconds=0.05)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store in turn: the in-memory twin, SQLite, Postgres."""
    found: Store = request.getfixturevalue(STORE_FIXTURES[request.param])
    return found


@pytest.fixture(params=["sqlite", POSTGRES])
def db_store(request: pytest.FixtureRequest) -> SqlStore:
    """Each SQL store in turn: SQLite, Postgres."""
    found: SqlStore = request.getfixturevalue(STORE_FIXTURES[request.param])
    return found


@pytest.fixture
def memory_store() -> MemoryStore:
    """The execution store's in-memory twin."""
    return MemoryStore()


@pytest.fixture
def sqlite_store(settings: Settings) -> Iterator[SqlStore]:
    """A migrated SQLite store in the test's data directory."""
    s = SqlStore(settings.resolved_database_url)
    s.upgrade()
    yield s
    s.close()


@contextlib.contextmanager
def new_pg_database(prefix: str = "conveyor_test") -> Iterator[str]:
    """The URL of a new, empty Postgres database, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:
        missing("Postgres", str(exc))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # A new connection: a test may have restarted the server since (tests/integration).
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh Postgres database for the test session, dropped afterwards."""
    with new_pg_database() as url:
        yield url


@pytest.fixture
def pg_store(pg_database: str) -> Iterator[SqlStore]:
    """A migrated store on the session's Postgres database, emptied after each test."""
    s = SqlStore(pg_database)
    s.upgrade()
    yield s
    # TRUNCATE, not DELETE: it waits for every other writer (a server or CLI process a
    # test started may still be committing), so no row of this test outlives it.
    names = ", ".join(table.name for table in reversed(metadata.sorted_tables))
    with s.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {names}")
    s.close()
