"""The counts behind /metrics: kept by the transitions, right after any mix of them, and
read without touching the runs or the history of steps, so a scrape costs the same
whatever the history (queued steps alone are read, to tell ready ones from those in a
retry backoff).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from conveyor.api.metrics import registry_for
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine.recovery import retry_run
from conveyor.orchestrator.store.schema import events, runs, steps
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.stats import Stats, queued_in_backoff
from tests.unit.runtime_kit import FAIL, A, B, Harness, pipeline


def counted_from_the_tables(store: SqlStore) -> tuple[Counter[str], Counter[tuple[str, str, str]]]:
    """Runs by status and steps by (status, type, queue), counted the slow way."""
    with store.engine.connect() as conn:
        by_run = Counter({r.status: r.n for r in conn.execute(_RUNS)})
        by_step = Counter({(r.status, r.type, r.queue): r.n for r in conn.execute(_STEPS)})
    return by_run, by_step


_N = sa.func.count().label("n")
_RUNS = sa.select(runs.c.status, _N).group_by(runs.c.status)
_STEPS = sa.select(steps.c.status, steps.c.type, steps.c.queue, _N).group_by(
    steps.c.status, steps.c.type, steps.c.queue
)


def ended_attempts(store: SqlStore) -> int:
    """Attempts that ran and ended succeeded or failed, from the events."""
    query = sa.select(sa.func.count()).where(events.c.type.in_(("step.succeeded", "step.failed")))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def assert_counts_right(store: SqlStore) -> None:
    now = Stats(store).snapshot()
    by_run, by_step = counted_from_the_tables(store)
    assert now.runs_by_status() == dict(by_run)
    assert now.steps_by_status() == dict(by_step)
    queued = Counter[str]()
    for (status, _, queue), n in by_step.items():
        if status == "queued":
            queued[queue] += n
    depth = now.queue_depth()
    assert {q: depth[q, "ready"] + depth[q, "backoff"] for q, _ in depth} == dict(queued)
    histograms = now.step_durations()
    assert sum(h.count for h in histograms) == ended_attempts(store)
    for h in histograms:
        assert [n for _, n in h.buckets] == sorted(n for _, n in h.buckets)
        assert h.buckets[-1][1] <= h.count and h.total >= 0


def a_mix_of_transitions(h: Harness, check: bool = True) -> None:
    """Runs that succeed, fail, retry, get retried whole, are cancelled, are left going."""
    store = h.store
    assert isinstance(store, SqlStore)

    def scrape() -> None:
        if check:
            assert_counts_right(store)

    fine = h.start(pipeline(A, "{name: b, type: noop, needs: [a]}"))
    h.drive(fine, {})
    scrape()
    broken = h.start(pipeline(A, "{name: b, type: noop, needs: [a]}"))
    h.drive(broken, {"a": [FAIL]})
    scrape()
    retry_run(h.runtime, broken)
    scrape()
    h.drive(broken, {})
    flaky = h.start(pipeline("{name: a, type: noop, retry: {max_attempts: 3}}", B))
    h.drive(flaky, {"a": [FAIL, FAIL, "ok"]})
    scrape()
    stopped = h.start(pipeline(A, "{name: b, type: noop, needs: [a]}"))
    h.runtime.cancel(stopped)
    h.recorder.sent.clear()  # its message is stale now
    going = h.start(pipeline(A, B, "{name: c, type: noop, needs: [a, b]}"))
    ref, _ = h.recorder.sent.pop(0)
    claimed = h.runtime.claim(ref, "w")
    assert claimed is not None
    with store.transaction(going) as tx:  # its worker died: the reconciler takes it back
        tx.requeue(tx.step(ref.step_key), "lease expired")
    h.recorder.sent.clear()  # b and the requeued a stay queued


def test_the_counts_are_right_after_a_mix_of_transitions(db_store: SqlStore) -> None:
    # Given runs through every kind of transition, scraped between them
    h = Harness.on(db_store)

    # When each is done (the checks run after every stage, then at the end)
    a_mix_of_transitions(h)

    # Then the counts are those of the tables, counted the slow way
    assert_counts_right(db_store)
    statuses = Stats(db_store).snapshot().runs_by_status()
    assert statuses == {"succeeded": 3, "cancelled": 1, "running": 1}


@contextmanager
def statements(store: SqlStore) -> Iterator[list[str]]:
    """Every SQL statement the store's engines run in the block."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    engines = {store.engine, store.read_engine}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", record)


def test_a_scrape_reads_no_run_and_only_queued_steps(db_store: SqlStore) -> None:
    # Given a history of runs
    a_mix_of_transitions(Harness.on(db_store), check=False)

    # When the metrics are scraped, as /metrics does
    with statements(db_store) as seen:
        text = generate_latest(registry_for(Stats(db_store))).decode()

    # Then the counts come from the counts: the history's size does not matter
    assert 'conveyor_runs{status="succeeded"} 3.0' in text
    assert seen and not [s for s in seen if runs.name in s]
    # And the one statement that reads steps reads queued ones only (for their retry time)
    reading = [s for s in seen if steps.name in s]
    assert len(reading) == 1, reading
    assert "workflow_steps.status = " in reading[0] and "available_at >" in reading[0]


@pytest.mark.postgres
def test_the_backoff_count_walks_the_status_index(pg_store: SqlStore) -> None:
    # Given a history of runs on Postgres
    a_mix_of_transitions(Harness.on(pg_store), check=False)
    query = str(
        queued_in_backoff(utcnow()).compile(pg_store.engine, compile_kwargs={"literal_binds": True})
    )

    # When the planner is kept off whole-table scans, as it is once the table is large
    with pg_store.engine.connect() as conn:
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(sa.text(f"EXPLAIN {query}")))

    # Then the queued steps are read as a range of the (status, run, ...) index
    assert "ix_workflow_steps_status_run" in plan, plan


def test_queued_steps_waiting_out_a_retry_are_backoff_not_ready(db_store: SqlStore) -> None:
    # Given a step that failed and waits a minute before its next try, and a ready one
    h = Harness.on(db_store)
    flaky = h.start(pipeline("{name: a, type: noop, retry: {max_attempts: 3, backoff: 60s}}", B))
    h.drive(flaky, {"a": [FAIL]})
    h.start(pipeline("{name: a, type: noop, queue: sandbox}"))

    # When the metrics are read now, and once the minute has passed
    now = Stats(db_store).snapshot().queue_depth()
    later = Stats(db_store).snapshot(utcnow() + timedelta(minutes=2)).queue_depth()

    # Then the failed step is counted as in backoff, then as ready
    assert now == {
        ("control", "ready"): 0,
        ("control", "backoff"): 1,
        ("sandbox", "ready"): 1,
        ("sandbox", "backoff"): 0,
    }
    assert (later["control", "ready"], later["control", "backoff"]) == (1, 0)
    # And /metrics shows both states of every queue
    text = generate_latest(registry_for(Stats(db_store))).decode()
    assert 'conveyor_queue_depth{queue="control",state="backoff"} 1.0' in text
    assert 'conveyor_queue_depth{queue="control",state="ready"} 0.0' in text
    assert 'conveyor_queue_depth{queue="scan",state="ready"} 0.0' in text
    assert 'conveyor_queue_depth{queue="scan",state="backoff"} 0.0' in text


def test_scrapes_at_once_from_many_pods_count_every_change_once(db_store: SqlStore) -> None:
    # Given transitions going on while four "API pods" scrape over and over
    h = Harness.on(db_store)
    done = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        other = SqlStore(db_store.url)  # a pod of its own
        try:
            while not done.is_set():
                Stats(other).snapshot()
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.close()

    pods = [threading.Thread(target=scrape) for _ in range(4)]
    for pod in pods:
        pod.start()
    try:
        for _ in range(3):
            a_mix_of_transitions(h, check=False)
    finally:
        done.set()
        for pod in pods:
            pod.join()

    # Then every change was folded in exactly once
    assert not errors, errors
    assert_counts_right(db_store)


@pytest.mark.parametrize(
    "seconds, bucket", [(0.05, "0.1"), (0.1, "0.1"), (2, "5.0"), (1e5, "+Inf")]
)
def test_a_duration_lands_in_the_smallest_bucket_it_fits(seconds: float, bucket: str) -> None:
    from conveyor.orchestrator.store.stats import bucket_label

    assert bucket_label(seconds) == bucket
