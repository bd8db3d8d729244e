"""The execution store: runs, transitions, events, logs, on every store.

Tests that take ``store`` run on the in-memory twin, SQLite and Postgres: they are the
contract the twin honours. Tests of what only SQL has (the schema its migrations
make, the driver's errors) take ``db_store``: SQLite and Postgres.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    NothingToClaim,
    SchemaOutdated,
    StepsMoved,
    StoreUnavailable,
)
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.records import NewRun, StepSeed
from conveyor.orchestrator.store.schema import metadata
from conveyor.orchestrator.store.sql import SqlStore

SOURCE = "pipelines: {p: {steps: [{name: a, type: step.log, config: {message: hi}}]}}"


def new_run(store: Store, source: str = SOURCE, key: str | None = None, steps: int = 2) -> str:
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


def queue_and_claim(store: Store, run_id: str, key: str = "s0", owner: str = "w1") -> None:
    """Move a step from pending to running, as the runtime's claim does."""
    with store.transaction(run_id) as tx:
        tx.move_step(tx.step(key), StepStatus.QUEUED, attempts=1)
    with store.transaction(run_id, key, claim_attempt=1) as tx:
        tx.move_step(tx.step(key), StepStatus.RUNNING, lease_owner=owner, started_at=tx.now)


def test_every_store_answers_to_the_store_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_a_new_run_has_pending_steps_and_a_first_event(store: Store) -> None:
    run_id = new_run(store)

    run = store.get_run(run_id)
    assert run.status == RunStatus.RUNNING and run.params == {"v": "1"}
    assert [(s.key, s.status, s.attempts) for s in store.list_steps(run_id)] == [
        ("s0", StepStatus.PENDING, 0),
        ("s1", StepStatus.PENDING, 0),
    ]
    events = store.list_events(run_id)
    assert [(e.seq, e.type, e.payload["version"]) for e in events] == [(1, "run.created", 1)]


def test_definitions_get_a_new_version_only_when_the_source_changes(store: Store) -> None:
    first, same = new_run(store), new_run(store)
    changed = new_run(store, SOURCE + "\n# edited")

    versions = [store.list_events(r)[0].payload["version"] for r in (first, same, changed)]
    assert versions == [1, 1, 2]


def test_an_idempotency_key_returns_the_same_run(store: Store) -> None:
    assert new_run(store, key="k-1") == new_run(store, key="k-1")
    assert new_run(store, key="k-2") != new_run(store, key="k-1")


def test_a_run_is_found_by_its_idempotency_key(store: Store) -> None:
    run_id = new_run(store, key="k-1")

    found = store.run_by_idempotency_key("k-1")
    assert found is not None and found.id == run_id
    assert store.run_by_idempotency_key("k-2") is None


def test_illegal_moves_are_refused_and_nothing_is_written(store: Store) -> None:
    run_id = new_run(store)

    with pytest.raises(IllegalTransition), store.transaction(run_id) as tx:
        step = tx.step("s0")
        tx.move_step(step, StepStatus.QUEUED, attempts=1)
        tx.move_step(tx.step("s0"), StepStatus.SUCCEEDED)  # queued -> succeeded skips running

    assert store.list_steps(run_id)[0].status == StepStatus.PENDING
    assert len(store.list_events(run_id)) == 1


def test_a_move_from_a_stale_view_changes_nothing(store: Store) -> None:
    run_id = new_run(store)
    with store.transaction(run_id) as tx:
        stale = tx.step("s0")
        assert tx.move_step(stale, StepStatus.QUEUED, attempts=1)
        assert not tx.move_step(stale, StepStatus.QUEUED, attempts=1)

    steps = store.list_steps(run_id)
    assert (steps[0].status, steps[0].attempts) == (StepStatus.QUEUED, 1)
    assert [e.type for e in store.list_events(run_id)] == ["run.created", "step.queued"]


def test_moving_several_steps_is_refused_whole_when_one_moved_under_the_lock(
    store: Store,
) -> None:
    """Given one of two steps already moved, When both are moved, Then neither stays moved."""
    run_id = new_run(store)

    with pytest.raises(StepsMoved), store.transaction(run_id) as tx:
        first, second = tx.steps()
        tx.move_step(tx.step("s1"), StepStatus.QUEUED, attempts=1)
        moves = [(first, {"attempts": 1}, None), (second, {"attempts": 1}, None)]
        tx.move_steps(moves, StepStatus.QUEUED)

    assert [s.status for s in store.list_steps(run_id)] == [StepStatus.PENDING] * 2
    assert len(store.list_events(run_id)) == 1


def test_a_transaction_that_raises_leaves_nothing_behind(store: Store) -> None:
    """Given a body that moves, logs and records events, When it raises, Then none of it stays."""
    run_id = new_run(store)

    with pytest.raises(RuntimeError), store.transaction(run_id) as tx:
        tx.move_step(tx.step("s0"), StepStatus.QUEUED, attempts=1)
        tx.append_logs([("s0", 1, [("stdout", "half-way")])])
        tx.update_run(error="noted")
        tx.move_run(RunStatus.FAILED, error="boom")
        raise RuntimeError("the worker died")

    run = store.get_run(run_id)
    assert (run.status, run.error, run.event_seq) == (RunStatus.RUNNING, None, 1)
    assert store.list_steps(run_id)[0].status == StepStatus.PENDING
    assert store.list_logs(run_id) == [] and len(store.list_events(run_id)) == 1


def test_a_claim_finds_nothing_unless_the_step_is_queued_at_that_attempt(store: Store) -> None:
    run_id = new_run(store)
    with pytest.raises(NothingToClaim), store.transaction(run_id, "s0", claim_attempt=1):
        pass  # still pending
    queue_and_claim(store, run_id)

    for ref in ((run_id, "s0", 1), (run_id, "s0", 2), ("no-such-run", "s0", 1)):
        with pytest.raises(NothingToClaim), store.transaction(*ref):
            pass
    with pytest.raises(NotFound), store.transaction("no-such-run"):
        pass
    assert store.list_steps(run_id)[0].lease_owner == "w1"


def test_a_transaction_reads_the_state_of_steps_and_one_step_whole(store: Store) -> None:
    run_id = new_run(store)
    queue_and_claim(store, run_id)

    with store.transaction(run_id, "s0") as tx:
        assert tx.step("s0").lease_owner == "w1"
        tx.succeed([(tx.step("s0"), {"exit_code": 0, "out": [1, 2]})])
        assert tx.steps(["s0"])[0].outputs is None  # the state only, as an advance reads it
        assert tx.outputs() == {"s0": {"exit_code": 0, "out": [1, 2]}}
        assert tx.status_counts() == {StepStatus.SUCCEEDED: 1, StepStatus.PENDING: 1}
        with pytest.raises(NotFound):
            tx.step("nope")

    assert store.step_outputs(run_id) == {"s0": {"exit_code": 0, "out": [1, 2]}}
    assert store.get_step(run_id, "s0").completed_at is not None


def test_a_runs_status_counts_follow_every_move_and_roll_back_with_it(store: Store) -> None:
    run_id = new_run(store, steps=4)

    def counts() -> dict[StepStatus, int]:
        with store.transaction(run_id) as tx:
            return dict(tx.status_counts())

    def actual() -> dict[StepStatus, int]:
        found: dict[StepStatus, int] = {}
        for step in store.list_steps(run_id):
            found[step.status] = found.get(step.status, 0) + 1
        return found

    assert counts() == actual() == {StepStatus.PENDING: 4}
    queue_and_claim(store, run_id)
    with store.transaction(run_id) as tx:
        tx.queue([tx.step("s1"), tx.step("s2")])
        tx.skip(tx.step("s3"), "no")
        assert tx.status_counts()[StepStatus.QUEUED] == 2  # as this transaction moved them
    with pytest.raises(RuntimeError), store.transaction(run_id) as tx:
        tx.succeed([(tx.step("s0"), {})])
        raise RuntimeError("rolled back, with the counts it changed")
    assert counts() == actual()
    assert actual() == {StepStatus.RUNNING: 1, StepStatus.QUEUED: 2, StepStatus.SKIPPED: 1}
    with store.transaction(run_id) as tx:
        running = tx.step("s0")
        tx.succeed([(running, {})])
        tx.cancel(tx.step("s1"), "stop")
        assert not tx.move_step(running, StepStatus.CANCELLED)  # it moved since: no count
    assert counts() == actual()
    assert actual() == {
        StepStatus.SUCCEEDED: 1,
        StepStatus.CANCELLED: 1,
        StepStatus.QUEUED: 1,
        StepStatus.SKIPPED: 1,
    }


def test_concurrent_writers_leave_a_gap_free_event_sequence(store: Store) -> None:
    run_id = new_run(store)

    def writer(n: int) -> None:
        for i in range(25):
            with store.transaction(run_id) as tx:
                tx.event("test.tick", None, writer=n, i=i)
                if i % 5 == 0:
                    tx.event("test.extra", None, writer=n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    seqs = [e.seq for e in store.list_events(run_id)]
    assert seqs == list(range(1, 1 + 1 + 6 * 30))
    assert store.get_run(run_id).event_seq == seqs[-1]


def test_runs_are_found_by_a_unique_prefix(store: Store) -> None:
    run_id = new_run(store)

    assert store.find_run(run_id[:8]).id == run_id
    with pytest.raises(NotFound):
        store.find_run("ffffffff-no-such-run")
    with pytest.raises(NotFound):
        store.get_run("nope")


def test_listing_runs_filters_and_orders_newest_first(store: Store) -> None:
    ids = [new_run(store) for _ in range(3)]
    with store.transaction(ids[0]) as tx:
        tx.move_run(RunStatus.CANCELLED, error="stop")

    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(status="cancelled")] == [ids[0]]
    assert store.list_runs(pipeline="other") == []
    assert store.get_run(ids[0]).error == "stop"


def test_a_page_of_runs_goes_on_after_the_last_run_seen(store: Store) -> None:
    ids = [new_run(store) for _ in range(3)]

    last = store.list_runs(limit=1)[0]
    after = store.list_runs(after=(last.created_at, last.id))

    assert [r.id for r in after] == ids[1::-1]
    assert store.latest_run_id("p", "running") == ids[2]
    assert store.latest_run_id("p", "running", before=last.created_at) == ids[1]


def test_logs_keep_their_order_and_can_be_tailed(store: Store) -> None:
    run_id = new_run(store)
    store.append_logs(run_id, "s0", 1, [("stdout", f"line {i}") for i in range(10)])
    store.append_logs(run_id, "s1", 1, [("stdout", "other")])

    assert [line.text for line in store.list_logs(run_id, "s0")] == [f"line {i}" for i in range(10)]
    assert [line.text for line in store.tail_logs(run_id, "s0", 3)] == [
        "line 7",
        "line 8",
        "line 9",
    ]
    assert len(store.list_logs(run_id)) == 11


def test_logs_are_read_on_from_the_last_line_seen(store: Store) -> None:
    run_id = new_run(store)
    store.append_logs(run_id, "s0", 1, [("stdout", f"line {i}") for i in range(10)])
    store.append_logs(run_id, "s0", 2, [("stderr", "again")])

    seen = store.list_logs(run_id, "s0")[4].id
    page = store.list_logs(run_id, "s0", after_id=seen, limit=2)

    assert [line.text for line in page] == ["line 5", "line 6"]
    assert [line.text for line in store.list_logs(run_id, attempt=2)] == ["again"]
    assert [line.text for line in store.tail_logs(run_id, "s0", 2, attempt=1)] == [
        "line 8",
        "line 9",
    ]


def test_lease_renewal_reports_a_cancelled_run(store: Store) -> None:
    run_id = new_run(store)
    with store.transaction(run_id) as tx:
        tx.move_step(tx.step("s0"), StepStatus.QUEUED, attempts=1)
    with store.transaction(run_id) as tx:
        tx.move_step(tx.step("s0"), StepStatus.RUNNING, lease_owner="w1", started_at=tx.now)
    step_id = store.list_steps(run_id)[0].id
    until = utcnow() + timedelta(seconds=60)

    assert store.renew_leases([step_id], "w1", until) == {step_id: "running"}
    assert store.list_steps(run_id)[0].lease_expires_at is not None
    with store.transaction(run_id) as tx:
        tx.move_run(RunStatus.CANCELLED)
    assert store.renew_leases([step_id], "w1", until) == {step_id: "cancelled"}


def test_the_reconciler_finds_lost_leases_and_stale_queues(store: Store) -> None:
    """Given a step running on a lease and one queued, Then each is found once its time is up."""
    run_id = new_run(store)
    queue_and_claim(store, run_id)
    with store.transaction(run_id) as tx:
        tx.move_step(tx.step("s1"), StepStatus.QUEUED, attempts=1, available_at=tx.now)
    step_id = store.list_steps(run_id)[0].id
    store.renew_leases([step_id], "w1", utcnow() + timedelta(seconds=30))
    later = utcnow() + timedelta(minutes=1)

    assert store.expired_leases(utcnow()) == []
    assert store.expired_leases(later) == [(run_id, "s0")]
    assert store.stale_queued(later) == [(run_id, "s1")]
    assert store.overdue_runs(later) == []


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
