"""Migrations that move data: run against a database at the revision before them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from conveyor.orchestrator.contracts import WorkspaceHead
from conveyor.orchestrator.store import db
from conveyor.orchestrator.store.schema import (
    UTCDateTime,
    definitions,
    events,
    runs,
    step_log_chunks,
    steps,
)
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.stats import Stats


def database_url(tmp_path: Path) -> str:
    """The database the tests migrate (the Postgres twin of this module swaps it)."""
    return f"sqlite:///{tmp_path / 'old.db'}"


def old_database(url: str, revision: str) -> sa.Engine:
    """A database migrated only up to ``revision``."""
    engine, _ = db.create_engines(url)
    db.upgrade(engine, revision)
    return engine


def add_definition(conn: sa.Connection, at: datetime) -> None:
    """The pipeline ``p`` (definition ``d``) the runs these tests add belong to."""
    conn.execute(
        definitions.insert().values(
            id="d", name="p", version=1, checksum="c", definition={}, created_at=at
        )
    )


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
        add_definition(conn, ended)
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


_old_logs = sa.Table(
    "step_logs",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_id", sa.String(36)),
    sa.Column("step_key", sa.String(200)),
    sa.Column("attempt", sa.Integer),
    sa.Column("stream", sa.String(10)),
    sa.Column("text", sa.Text),
    sa.Column("created_at", UTCDateTime),
)


def test_0006_moves_logs_into_chunks_and_counts_the_runs_and_steps_there_are(
    tmp_path: Path,
) -> None:
    # Given a database at 0005 with a run, its steps, and logs a row per line: two
    # attempts of one step (one far over a chunk), interleaved streams, another step
    url = database_url(tmp_path)
    engine = old_database(url, "0005")
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    written = {
        ("build", 1): [("stdout", f"first {i:05d} " + "." * 200) for i in range(700)],
        ("build", 2): [("stdout" if i % 3 else "stderr", f"second {i}") for i in range(50)],
        ("test", 1): [("stdout", "ünïcode ✓"), ("system", "")],
    }
    with engine.begin() as conn:
        add_definition(conn, ended)
        add_run(conn, "r1", ended)
        for position, (key, status, seconds) in enumerate(
            [("build", "succeeded", 2.5), ("test", "failed", 0.05), ("late", "pending", None)]
        ):
            started = ended - timedelta(seconds=seconds) if seconds is not None else None
            conn.execute(
                steps.insert().values(
                    id=key,
                    instance_id="r1",
                    step_key=key,
                    position=position,
                    type="step.x",
                    status=status,
                    attempts=1,
                    queue="sandbox",
                    started_at=started,
                    completed_at=ended if started else None,
                )
            )
        rows = [
            {
                "instance_id": "r1",
                "step_key": key,
                "attempt": attempt,
                "stream": stream,
                "text": text,
                "created_at": ended,
            }
            for (key, attempt), lines in written.items()
            for stream, text in lines
        ]
        conn.execute(_old_logs.insert(), rows)

    # When the database is brought up to date
    db.upgrade(engine)
    engine.dispose()

    # Then every line reads back, in order, from far fewer rows
    store = SqlStore(url)
    try:
        for (key, attempt), lines in written.items():
            found = store.list_logs("r1", key, attempt=attempt)
            assert [(x.stream, x.text) for x in found] == lines, (key, attempt)
        everything = store.list_logs("r1")
        assert len(everything) == sum(len(v) for v in written.values())
        assert [x.id for x in everything] == sorted(x.id for x in everything)
        with store.engine.connect() as conn:
            chunks = conn.execute(sa.select(sa.func.count()).select_from(step_log_chunks)).scalar()
        assert chunks is not None and 4 <= chunks <= 6  # 700 lines of 200 bytes: 3 chunks

        # And the counts behind /metrics are those of the tables
        now = Stats(store).snapshot()
        assert now.runs_by_status() == {"succeeded": 1}
        assert now.steps_by_status() == {
            ("succeeded", "step.x", "sandbox"): 1,
            ("failed", "step.x", "sandbox"): 1,
            ("pending", "step.x", "sandbox"): 1,
        }
        (histogram,) = now.step_durations()
        assert histogram.count == 2 and abs(histogram.total - 2.55) < 0.01
        assert dict(histogram.buckets)[0.1] == 1 and dict(histogram.buckets)[5] == 2
    finally:
        store.close()


def add_steps(conn: sa.Connection, run_id: str, statuses: list[str]) -> None:
    for position, status in enumerate(statuses):
        key = f"{run_id}-{position}"
        row = {"id": key, "instance_id": run_id, "step_key": key, "position": position}
        row |= {"type": "step.x", "status": status, "attempts": 1, "queue": "sandbox"}
        conn.execute(steps.insert().values(row))


def test_0007_counts_each_runs_steps_on_its_row(tmp_path: Path) -> None:
    # Given a database at 0006 with a run whose steps are in several statuses, a run
    # with one step, and a run with none
    url = database_url(tmp_path)
    engine = old_database(url, "0006")
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        add_definition(conn, ended)
        for run_id in ("r1", "r2", "r3"):
            add_run(conn, run_id, ended)
        add_steps(conn, "r1", ["succeeded", "succeeded", "failed", "pending", "queued"])
        add_steps(conn, "r2", ["running"])

    # When the database is brought up to date
    db.upgrade(engine)
    engine.dispose()

    # Then each run's row counts its steps by status, as a run transaction reads them
    store = SqlStore(url)
    try:
        with store.engine.connect() as conn:
            stored = dict(conn.execute(sa.select(runs.c.id, runs.c.step_counts)).all())
        assert stored == {
            "r1": {"succeeded": 2, "failed": 1, "pending": 1, "queued": 1},
            "r2": {"running": 1},
            "r3": {},
        }
        with store.transaction("r1") as tx:
            assert tx.status_counts() == {"succeeded": 2, "failed": 1, "pending": 1, "queued": 1}
    finally:
        store.close()


def run_indexes(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(i["name"]) for i in sa.inspect(conn).get_indexes("workflow_instances")}


def test_0008_indexes_the_runs_listing_by_each_filter_and_ids_by_prefix(tmp_path: Path) -> None:
    # Given a database at 0007 with a run
    engine = old_database(database_url(tmp_path), "0007")
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        add_definition(conn, ended)
        add_run(conn, "r1", ended)

    # When the database is brought up to date
    db.upgrade(engine)

    # Then the listing has an index for each filter it takes, the prefix lookup one, and
    # the indexes those cover are gone
    names = run_indexes(engine)
    assert {
        "ix_workflow_instances_created_at_id",
        "ix_workflow_instances_status_created_at_id",
        "ix_workflow_instances_pipeline_created_at_id",
        "ix_workflow_instances_pipeline_status_created_at_id",
        "ix_workflow_instances_id_prefix",
    } <= names
    assert not {"ix_workflow_instances_status", "ix_workflow_instances_pipeline_created"} & names
    engine.dispose()
    store = SqlStore(database_url(tmp_path))
    try:
        assert [r.id for r in store.list_runs(status="succeeded", pipeline="p")] == ["r1"]
        assert store.find_run("r1").id == "r1"
    finally:
        store.close()


def test_0009_keeps_runs_workspace_heads_and_the_live_worker_hosts(tmp_path: Path) -> None:
    # Given a database at 0008 with a run
    engine = old_database(database_url(tmp_path), "0008")
    ended = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        add_definition(conn, ended)
        add_run(conn, "r1", ended)

    # When the database is brought up to date
    db.upgrade(engine)
    assert "ix_workflow_instances_workspace_kept" in run_indexes(engine)
    engine.dispose()

    # Then the old run has no workspace yet, and one can be published and moved on
    store = SqlStore(database_url(tmp_path))
    try:
        assert store.workspace_head("r1") is None
        assert store.move_workspace_head("r1", None, "a" * 64, "h1")
        assert not store.move_workspace_head("r1", None, "b" * 64, "h2")
        assert store.workspace_head("r1") == WorkspaceHead("a" * 64, "h1")
        store.announce_host("h1", ["sandbox"])
        assert store.live_hosts(ended) == {"sandbox": frozenset({"h1"})}
    finally:
        store.close()
