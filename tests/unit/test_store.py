"""The execution store: runs, transitions, events, logs (SQLite here; Postgres in integration/)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    SchemaOutdated,
    StoreUnavailable,
)
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.schema import metadata
from conveyor.orchestrator.store.sql import NewRun, SqlStore, StepSeed

SOURCE = "pipelines: {p: {steps: [{name: a, type: step.log, config: {message: hi}}]}}"


def new_run(store: SqlStore, source: str = SOURCE, key: str | None = None, steps: int = 2) -> str:
    seeds = [StepSeed(f"s{i}", "step.log", "control") for i in range(steps)]
    run = store.create_run(
        NewRun(
            pipeline="p",
            source=source,
            plan={"steps": []},
            params={"v": "1"},
            steps=seeds,
            idempotency_key=key,
        )
    )
    return run.id


def test_a_new_run_has_pending_steps_and_a_first_event(db_store: SqlStore) -> None:
    run_id = new_run(db_store)

    run = db_store.get_run(run_id)
    assert run.status == RunStatus.RUNNING and run.params == {"v": "1"}
    assert [(s.key, s.status, s.attempts) for s in db_store.list_steps(run_id)] == [
        ("s0", StepStatus.PENDING, 0),
        ("s1", StepStatus.PENDING, 0),
    ]
    events = db_store.list_events(run_id)
    assert [(e.seq, e.type, e.payload["version"]) for e in events] == [(1, "run.created", 1)]


def test_definitions_get_a_new_version_only_when_the_source_changes(db_store: SqlStore) -> None:
    first, same = new_run(db_store), new_run(db_store)
    changed = new_run(db_store, SOURCE + "\n# edited")

    versions = [db_store.list_events(r)[0].payload["version"] for r in (first, same, changed)]
    assert versions == [1, 1, 2]


def test_an_idempotency_key_returns_the_same_run(db_store: SqlStore) -> None:
    assert new_run(db_store, key="k-1") == new_run(db_store, key="k-1")
    assert new_run(db_store, key="k-2") != new_run(db_store, key="k-1")


def test_illegal_moves_are_refused_and_nothing_is_written(db_store: SqlStore) -> None:
    run_id = new_run(db_store)

    with pytest.raises(IllegalTransition), db_store.transaction(run_id) as tx:
        step = tx.step("s0")
        tx.move_step(step, StepStatus.QUEUED, attempts=1)
        tx.move_step(tx.step("s0"), StepStatus.SUCCEEDED)  # queued -> succeeded skips running

    assert db_store.list_steps(run_id)[0].status == StepStatus.PENDING
    assert len(db_store.list_events(run_id)) == 1


def test_a_move_from_a_stale_view_changes_nothing(db_store: SqlStore) -> None:
    run_id = new_run(db_store)
    with db_store.transaction(run_id) as tx:
        stale = tx.step("s0")
        assert tx.move_step(stale, StepStatus.QUEUED, attempts=1)
        assert not tx.move_step(stale, StepStatus.QUEUED, attempts=1)

    steps = db_store.list_steps(run_id)
    assert (steps[0].status, steps[0].attempts) == (StepStatus.QUEUED, 1)
    assert [e.type for e in db_store.list_events(run_id)] == ["run.created", "step.queued"]


def test_concurrent_writers_leave_a_gap_free_event_sequence(db_store: SqlStore) -> None:
    run_id = new_run(db_store)

    def writer(n: int) -> None:
        for i in range(25):
            with db_store.transaction(run_id) as tx:
                tx.event("test.tick", None, writer=n, i=i)
                if i % 5 == 0:
                    tx.event("test.extra", None, writer=n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    seqs = [e.seq for e in db_store.list_events(run_id)]
    assert seqs == list(range(1, 1 + 1 + 6 * 30))
    assert db_store.get_run(run_id).event_seq == seqs[-1]


def test_runs_are_found_by_a_unique_prefix(db_store: SqlStore) -> None:
    run_id = new_run(db_store)

    assert db_store.find_run(run_id[:8]).id == run_id
    with pytest.raises(NotFound):
        db_store.find_run("ffffffff-no-such-run")
    with pytest.raises(NotFound):
        db_store.get_run("nope")


def test_listing_runs_filters_and_orders_newest_first(db_store: SqlStore) -> None:
    ids = [new_run(db_store) for _ in range(3)]
    with db_store.transaction(ids[0]) as tx:
        tx.move_run(RunStatus.CANCELLED, error="stop")

    assert [r.id for r in db_store.list_runs()] == ids[::-1]
    assert [r.id for r in db_store.list_runs(status="cancelled")] == [ids[0]]
    assert db_store.list_runs(pipeline="other") == []
    assert db_store.get_run(ids[0]).error == "stop"


def test_logs_keep_their_order_and_can_be_tailed(db_store: SqlStore) -> None:
    run_id = new_run(db_store)
    db_store.append_logs(run_id, "s0", 1, [("stdout", f"line {i}") for i in range(10)])
    db_store.append_logs(run_id, "s1", 1, [("stdout", "other")])

    assert [line.text for line in db_store.list_logs(run_id, "s0")] == [
        f"line {i}" for i in range(10)
    ]
    assert [line.text for line in db_store.tail_logs(run_id, "s0", 3)] == [
        "line 7",
        "line 8",
        "line 9",
    ]
    assert len(db_store.list_logs(run_id)) == 11


def test_lease_renewal_reports_a_cancelled_run(db_store: SqlStore) -> None:
    run_id = new_run(db_store)
    with db_store.transaction(run_id) as tx:
        tx.move_step(tx.step("s0"), StepStatus.QUEUED, attempts=1)
    with db_store.transaction(run_id) as tx:
        tx.move_step(tx.step("s0"), StepStatus.RUNNING, lease_owner="w1", started_at=tx.now)
    step_id = db_store.list_steps(run_id)[0].id
    until = utcnow() + timedelta(seconds=60)

    assert db_store.renew_leases([step_id], "w1", until) == {step_id: "running"}
    assert db_store.list_steps(run_id)[0].lease_expires_at is not None
    with db_store.transaction(run_id) as tx:
        tx.move_run(RunStatus.CANCELLED)
    assert db_store.renew_leases([step_id], "w1", until) == {step_id: "cancelled"}


def test_the_migrations_create_exactly_the_tables_the_code_uses(db_store: SqlStore) -> None:
    with db_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_an_unmigrated_database_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = SqlStore(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaOutdated, match="conveyor db upgrade"):
        store.ensure_current()


def test_an_unreachable_database_is_one_clear_error() -> None:
    store = SqlStore("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable):
        store.list_runs()


def test_a_conflicting_write_is_a_conflict(db_store: SqlStore) -> None:
    run_id = new_run(db_store)
    with pytest.raises(Conflict), db_store.transaction(run_id) as tx:
        from conveyor.orchestrator.store.schema import steps

        tx.conn.execute(
            steps.insert().values(
                id=db_store.list_steps(run_id)[0].id,
                instance_id=run_id,
                step_key="x",
                position=9,
                type="t",
                status="pending",
                queue="q",
            )
        )
