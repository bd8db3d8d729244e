"""A run is stored with its first steps queued, or not at all; a stalled run is resumed.

Every test runs on each store (``h`` is built on ``store``): the twin, SQLite, Postgres.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import RunTransaction
from conveyor.orchestrator.engine.recovery import Reconciler
from conveyor.orchestrator.pipeline.plan import Compiler, ExecutionPlan
from conveyor.orchestrator.store.records import NewRun, StepSeed
from tests.unit.runtime_kit import A, B, Brief, Harness, Noop, pipeline

TWO = pipeline(A, "{name: b, type: noop, needs: [a]}", "{name: c, type: noop, needs: []}")


class Died(BaseException):
    """The process went away here (a kill between two statements)."""


def compiled(h: Harness, text: str) -> tuple[ExecutionPlan, str]:
    result = Compiler({"noop": Noop(), "brief": Brief()}, h.runtime.templates).compile(text)
    return result.select(None), result.source


def test_a_submit_that_dies_before_its_first_steps_are_queued_stores_no_run(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, source = compiled(h, TWO)
    real = h.runtime.advance_in

    def dies(tx: RunTransaction, changed: object = None) -> None:
        raise Died

    # Given a submitting process that dies after storing the run, before its steps are queued
    monkeypatch.setattr(h.runtime, "advance_in", dies)
    with pytest.raises(Died):
        h.runtime.submit(plan, source, {}, idempotency_key="k1")

    # Then no run was stored: there is none to find, none stuck
    assert h.store.list_runs() == []
    assert h.store.run_by_idempotency_key("k1") is None

    # And the client's retry with the same key starts a run that goes
    monkeypatch.setattr(h.runtime, "advance_in", real)
    run = h.runtime.submit(plan, source, {}, idempotency_key="k1")
    assert h.statuses(run.id) == {"a": "queued", "b": "pending", "c": "queued"}
    assert sorted(ref.step_key for ref, _ in h.recorder.sent) == ["a", "c"]


def test_the_first_steps_are_queued_in_the_transaction_that_stores_the_run(h: Harness) -> None:
    run_id = h.start(TWO)

    events = h.store.list_events(run_id)
    # One transaction: its events carry one time, run.created first, gap-free
    assert [e.type for e in events] == ["run.created", "step.queued", "step.queued"]
    assert len({e.created_at for e in events}) == 1
    assert [ref.step_key for ref, _ in h.recorder.sent] == ["a", "c"]


def test_the_reconciler_resumes_a_run_left_with_nothing_queued_or_running(h: Harness) -> None:
    # Given a run stored with its steps pending and nothing queued (what a process that
    # died between storing a run and advancing it, in an earlier version, left behind)
    plan, source = compiled(h, TWO)
    run = h.store.create_run(
        NewRun(
            pipeline=plan.pipeline,
            source=source,
            plan=plan.model_dump(mode="json", by_alias=True),
            params={},
            steps=[StepSeed(s.key, s.type, s.queue) for s in plan.steps],
        )
    )
    assert set(h.statuses(run.id).values()) == {"pending"}
    reconciler = Reconciler(h.runtime, stale_after=30)

    # When the reconciler passes: not at once (a run being created is left alone)...
    assert not reconciler.run_once()
    # ...but once it has been still for longer than the grace
    report = reconciler.run_once(utcnow() + timedelta(seconds=31))

    # Then its ready steps are queued and sent, and the run goes on to the end
    assert report.resumed == 1
    assert h.statuses(run.id) == {"a": "queued", "b": "pending", "c": "queued"}
    assert sorted(ref.step_key for ref, _ in h.recorder.sent) == ["a", "c"]
    h.drive(run.id, {})
    assert h.store.get_run(run.id).status == "succeeded"
    # A run that is going is not touched again
    assert not reconciler.run_once(utcnow() + timedelta(seconds=31))


def test_a_run_whose_steps_all_ended_but_that_never_settled_is_settled(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run whose last result was recorded by a process that did not advance it
    run_id = h.start(pipeline(A))
    monkeypatch.setattr(h.runtime, "advance_in", lambda tx, changed=None: None)
    h.drive(run_id, {})
    monkeypatch.undo()
    assert h.statuses(run_id) == {"a": "succeeded"}
    assert h.store.get_run(run_id).status == "running"

    # When the reconciler passes, it settles the run
    report = Reconciler(h.runtime, stale_after=30).run_once(utcnow() + timedelta(seconds=31))

    assert report.resumed == 1
    assert h.store.get_run(run_id).status == "succeeded"


def test_a_run_with_a_step_queued_or_blocked_is_not_resumed(h: Harness) -> None:
    going = h.start(pipeline(A, B))
    reconciler = Reconciler(h.runtime, stale_after=30)

    # A run going with a step queued (its message on the way) is not the reconciler's
    assert reconciler.run_once(utcnow() + timedelta(seconds=31)).resumed == 0
    assert h.store.get_run(going).status == "running"
