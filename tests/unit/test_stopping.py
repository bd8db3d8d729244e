"""A process that is shutting down (``Runtime.stopping``) takes no new step.

Every test runs on each store (``h`` is built on ``store``): the twin, SQLite, Postgres.
"""

from __future__ import annotations

from conveyor.orchestrator.engine.attempt import Finished
from tests.unit.runtime_kit import A, Harness, pipeline

CHAIN = pipeline(A, "{name: b, type: noop, needs: [a]}")


def test_a_stopping_process_records_its_step_and_sends_the_next_one(h: Harness) -> None:
    run_id = h.start(CHAIN)
    ref, _ = h.recorder.sent.pop(0)
    claim = h.runtime.claim(ref, "w1")
    assert claim is not None

    h.runtime.stopping = lambda: True
    recorded = h.runtime.record([Finished(claim.ref, outputs={})], continue_as="w1")

    assert recorded.next is None  # not claimed for this worker...
    assert h.statuses(run_id) == {"a": "succeeded", "b": "queued"}
    assert [r.step_key for r, _ in h.recorder.sent] == ["b"]  # ...but sent for another


def test_a_stopping_process_claims_nothing_and_sends_the_message_again(h: Harness) -> None:
    run_id = h.start(CHAIN)
    ref, _ = h.recorder.sent.pop(0)

    h.runtime.stopping = lambda: True
    assert h.runtime.claim(ref, "w1") is None

    assert h.statuses(run_id) == {"a": "queued", "b": "pending"}
    assert [r for r, _ in h.recorder.sent] == [ref]
    h.runtime.stopping = lambda: False
    h.drive(run_id, {})
    assert h.store.get_run(run_id).status == "succeeded"
