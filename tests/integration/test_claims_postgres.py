"""Claims on the real Postgres: a delivery with nothing to claim never waits on a busy run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import sqlalchemy as sa

from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.runtime_kit import A, B, Harness, pipeline

T = TypeVar("T")


def harness(store: SqlStore) -> Harness:
    recorder = MemoryDispatcher()
    return Harness(Runtime(store, TemplateEngine(), recorder), recorder, store)


def while_a_worker_holds_the_run(h: Harness, run_id: str, work: Callable[[], T]) -> T:
    """``work`` from another thread while a transaction holds the run's row, as a worker
    recording a result does; it must end without waiting for that transaction."""
    done: list[T] = []
    with h.store.transaction(run_id):
        thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
        thread.start()
        thread.join(30)  # work that waited for the lock would still be waiting here
        alive = thread.is_alive()
    thread.join(30)
    assert not alive, "it waited for the run's lock"
    return done[0]


def test_a_duplicate_delivery_neither_waits_nor_locks(pg_store: SqlStore) -> None:
    h = harness(pg_store)
    run_id = h.start(pipeline(A, B))
    ref, _ = h.recorder.sent.pop()
    assert h.runtime.claim(ref, "w1") is not None

    # The step is running: the same message again is dropped without touching the run,
    # even while another worker holds the run to record a result.
    assert while_a_worker_holds_the_run(h, run_id, lambda: h.runtime.claim(ref, "w2")) is None
    step = h.store.list_steps(run_id)[0]
    assert (step.status.value, step.lease_owner) == ("running", "w1")


def test_a_stale_attempt_and_a_deleted_run_are_dropped(pg_store: SqlStore) -> None:
    h = harness(pg_store)
    h.start(pipeline(A))
    ref, _ = h.recorder.sent.pop()
    old = replace(ref, attempt=ref.attempt + 1)
    assert h.runtime.claim(old, "w") is None
    assert h.runtime.claim(replace(ref, run_id="no-such-run"), "w") is None
    assert h.runtime.claim(ref, "w") is not None  # the real one still claims


def test_two_claims_racing_on_one_step_run_it_once(pg_store: SqlStore) -> None:
    """The second claim read the step as queued, then waited for the run: it gets None."""
    h = harness(pg_store)
    run_id = h.start(pipeline(A))
    ref, _ = h.recorder.sent.pop()
    results: list[object] = []
    with h.store.engine.connect() as first:
        # Another worker's claim, in the middle of its transaction.
        first.execute(
            sa.text("SELECT id FROM workflow_instances WHERE id = :id FOR UPDATE"), {"id": run_id}
        )
        first.execute(
            sa.text(
                "UPDATE workflow_steps SET status = 'running', lease_owner = 'w1'"
                " WHERE instance_id = :id AND step_key = 'a'"
            ),
            {"id": run_id},
        )
        thread = threading.Thread(
            target=lambda: results.append(h.runtime.claim(ref, "w2")), daemon=True
        )
        thread.start()
        wait_until_blocked(h.store, thread)
        first.commit()
    thread.join(30)
    assert results == [None]
    step = h.store.list_steps(run_id)[0]
    assert (step.status.value, step.lease_owner) == ("running", "w1")


def wait_until_blocked(store: SqlStore, thread: threading.Thread) -> None:
    """Until some session waits for a row lock (the claim in ``thread``)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(3000):
        with store.engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        assert thread.is_alive(), "the claim ended without waiting for the run"
        threading.Event().wait(0.01)
    raise AssertionError("the claim never waited for the run's lock")


def test_a_running_steps_log_lines_never_wait_for_the_runs_lock(pg_store: SqlStore) -> None:
    """Given a worker recording a result (it holds the run's row), when another step of
    the run streams log lines, then they are written at once, not after that result."""
    h = harness(pg_store)
    run_id = h.start(pipeline(A, B))
    lines = [("stdout", "hello")]
    while_a_worker_holds_the_run(h, run_id, lambda: h.store.append_logs(run_id, "a", 1, lines))
    assert [line.text for line in h.store.list_logs(run_id, "a")] == ["hello"]
