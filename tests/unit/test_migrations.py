"""Migrations that move data: run against a database at the revision before them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from conveyor.orchestrator.store import db
from conveyor.orchestrator.store.schema import definitions, events, runs


def database_url(tmp_path: Path) -> str:
    """The database the tests migrate (the Postgres twin of this module swaps it)."""
    return f"sqlite:///{tmp_path / 'old.db'}"


def old_database(url: str, revision: str) -> sa.Engine:
    """A database migrated only up to ``revision``."""
    engine, _ = db.create_engines(url)
    db.upgrade(engine, revision)
    return engine


def add_run(conn: sa.Connection, run_id: str, ended: datetime) -> None:
    row = {
        "id": run_id,
        "definition_id": "d",
        "pipeline": "p",
        "status": "succeeded",
        "params": {},
        "plan": {},
        "event_seq": 0,
        "created_at": ended - timedelta(minutes=1),
        "updated_at": ended,
        "completed_at": ended,
    }
    conn.execute(runs.insert().values(row))


def add_expired_event(conn: sa.Connection, run_id: str, seq: int, at: datetime) -> None:
    row = {
        "instance_id": run_id,
        "seq": seq,
        "type": "artifacts.expired",
        "payload": {"count": 1},
        "created_at": at,
    }
    conn.execute(events.insert().values(row))


def expired_at(engine: sa.Engine) -> dict[str, datetime | None]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.id, runs.c.artifacts_expired_at))
        return {r.id: r.artifacts_expired_at for r in rows}


def test_0005_fills_in_when_each_runs_artifacts_expired(tmp_path: Path) -> None:
    # Given runs of a database at 0004: one whose artifacts expired after it ended, one
    # retried (it ended again) since its artifacts expired, and one that keeps them
    engine = old_database(database_url(tmp_path), "0004")
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            definitions.insert().values(
                id="d", name="p", version=1, checksum="c", definition={}, created_at=ended
            )
        )
        for run_id in ("gone", "retried", "kept"):
            add_run(conn, run_id, ended)
        add_expired_event(conn, "gone", 1, ended + timedelta(days=30))
        add_expired_event(conn, "retried", 1, ended - timedelta(days=1))

    # When the database is brought up to date
    db.upgrade(engine)

    # Then only the run whose artifacts went since it last ended says so
    found = expired_at(engine)
    assert found == {"gone": ended + timedelta(days=30), "retried": None, "kept": None}
    with engine.connect() as conn:
        names = {i["name"] for i in sa.inspect(conn).get_indexes("workflow_instances")}
    assert "ix_workflow_instances_artifacts_kept" in names
    engine.dispose()
