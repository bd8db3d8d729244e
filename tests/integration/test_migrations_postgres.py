"""The data-moving migrations of tests/unit/test_migrations.py, on a fresh Postgres database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.unit.test_migrations as on_sqlite
from tests.conftest import PG_ADMIN_URL, missing

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty Postgres database, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except Exception as exc:
        missing("Postgres", str(exc))
    name = f"conveyor_migrate_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_0005_fills_in_when_each_runs_artifacts_expired(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SQLite test, with its database on Postgres instead.
    monkeypatch.setattr(on_sqlite, "database_url", lambda _tmp: empty_database)
    on_sqlite.test_0005_fills_in_when_each_runs_artifacts_expired(tmp_path)
