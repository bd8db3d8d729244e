"""Retrying whole runs, and the reconciler that recovers lost messages and lost workers.

Every test runs on each store (``h`` is built on ``store``): the twin, SQLite, Postgres.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine.attempt import Finished, Outcome
from conveyor.orchestrator.engine.recovery import Reconciler, retry_run
from conveyor.orchestrator.errors import Conflict
from tests.unit.runtime_kit import FAIL, A, B, Harness, pipeline


def test_a_retried_run_reruns_failed_and_cancelled_steps_and_keeps_the_rest(h: Harness) -> None:
    run_id = h.start(
        pipeline(
            "{name: a, type: noop, needs: []}",
            "{name: b, type: noop, needs: []}",
            "{name: c, type: noop, needs: [b]}",
        )
    )
    h.drive(run_id, {"b": [FAIL]})
    assert h.statuses(run_id) == {"a": "succeeded", "b": "failed", "c": "cancelled"}
    outputs_of_a = h.store.list_steps(run_id)[0].outputs

    run = retry_run(h.runtime, run_id, by="ops")
    h.drive(run_id, {})

    assert run.status == "running" and run.error is None
    assert h.statuses(run_id) == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    steps = {s.key: s for s in h.store.list_steps(run_id)}
    assert (steps["a"].attempts, steps["a"].outputs) == (1, outputs_of_a)
    assert steps["b"].attempts == 2
    assert h.store.get_run(run_id).status == "succeeded"
    types = [e.type for e in h.store.list_events(run_id)]
    assert "run.running" in types and types[-1] == "run.succeeded"


def test_only_finished_unsuccessful_runs_can_be_retried(h: Harness) -> None:
    run_id = h.start(pipeline(A))
    with pytest.raises(Conflict, match="only failed or cancelled runs"):
        retry_run(h.runtime, run_id)
    h.drive(run_id, {})
    with pytest.raises(Conflict, match="is succeeded"):
        retry_run(h.runtime, run_id)


def test_a_lost_message_is_dispatched_again(h: Harness) -> None:
    run_id = h.start(pipeline(A))
    h.recorder.sent.clear()  # the broker lost it
    reconciler = Reconciler(h.runtime, stale_after=30)

    assert not reconciler.run_once()  # not stale yet
    report = reconciler.run_once(utcnow() + timedelta(seconds=31))

    assert report.redispatched == 1
    assert [(r.step_key, r.attempt) for r, _ in h.recorder.sent] == [("a", 1)]
    h.drive(run_id, {})
    assert h.store.get_run(run_id).status == "succeeded"
    assert "step.redispatched" in [e.type for e in h.store.list_events(run_id)]


def test_a_step_whose_worker_died_is_run_again_by_another(h: Harness) -> None:
    run_id = h.start(pipeline(A, B))
    ref, _ = h.recorder.sent.pop()
    h.runtime.claim(ref, "worker-1")  # ... which then dies without a word
    later = utcnow() + h.runtime.lease + timedelta(seconds=1)

    report = Reconciler(h.runtime).run_once(later)

    assert report.reclaimed == 1
    ((retry, _),) = h.recorder.sent
    assert retry.attempt == 2
    h.runtime.record([Finished(ref, outputs={})])  # the dead worker's late word changes nothing
    h.drive(run_id, {})
    steps = {s.key: s for s in h.store.list_steps(run_id)}
    assert (steps["a"].status.value, steps["a"].attempts) == ("succeeded", 2)
    assert h.store.get_run(run_id).status == "succeeded"
    seqs = [e.seq for e in h.store.list_events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_step_that_keeps_losing_its_worker_fails_in_the_end(h: Harness) -> None:
    run_id = h.start(pipeline(A))
    reconciler = Reconciler(h.runtime)
    for _ in range(3):
        ref, _ = h.recorder.sent.pop()
        h.runtime.claim(ref, "w")
        reconciler.run_once(utcnow() + h.runtime.lease + timedelta(seconds=1))

    step = h.store.list_steps(run_id)[0]
    assert (step.status.value, step.attempts) == ("failed", 3)
    assert "lost its worker" in (step.last_error or "")
    assert h.store.get_run(run_id).status == "failed"


def test_an_overdue_run_is_failed_by_the_reconciler(h: Harness) -> None:
    run_id = h.start(pipeline(A, extra="    timeout: 10s\n"))

    report = Reconciler(h.runtime).run_once(utcnow() + timedelta(seconds=11))

    assert report.expired_runs == 1
    assert h.store.get_run(run_id).error == "run timed out after 10.0s"


def test_a_cancelled_runs_orphaned_step_ends_cancelled(h: Harness) -> None:
    run_id = h.start(pipeline(A))
    ref, _ = h.recorder.sent.pop()
    h.runtime.claim(ref, "w")
    h.runtime.cancel(run_id)

    Reconciler(h.runtime).run_once(utcnow() + h.runtime.lease + timedelta(seconds=1))

    assert h.statuses(run_id) == {"a": "cancelled"}
    assert Outcome  # the import is part of the harness
