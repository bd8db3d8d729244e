"""The data-moving migrations of tests/unit/test_migrations.py, on a fresh Postgres database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.unit.test_migrations as on_sqlite
from tests.conftest import new_pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A new, empty Postgres database, dropped afterwards."""
    with new_pg_database("conveyor_migrate") as url:
        yield url


def test_0005_fills_in_when_each_runs_artifacts_expired(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SQLite test, with its database on Postgres instead.
    monkeypatch.setattr(on_sqlite, "database_url", lambda _tmp: empty_database)
    on_sqlite.test_0005_fills_in_when_each_runs_artifacts_expired(tmp_path)


def test_0006_moves_logs_into_chunks_and_counts_the_runs_and_steps_there_are(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SQLite test, with its database on Postgres instead.
    monkeypatch.setattr(on_sqlite, "database_url", lambda _tmp: empty_database)
    on_sqlite.test_0006_moves_logs_into_chunks_and_counts_the_runs_and_steps_there_are(tmp_path)


def test_0007_counts_each_runs_steps_on_its_row(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SQLite test, with its database on Postgres instead.
    monkeypatch.setattr(on_sqlite, "database_url", lambda _tmp: empty_database)
    on_sqlite.test_0007_counts_each_runs_steps_on_its_row(tmp_path)


def test_0008_indexes_the_runs_listing_by_each_filter_and_ids_by_prefix(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The SQLite test, with its database on Postgres instead.
    monkeypatch.setattr(on_sqlite, "database_url", lambda _tmp: empty_database)
    on_sqlite.test_0008_indexes_the_runs_listing_by_each_filter_and_ids_by_prefix(tmp_path)
