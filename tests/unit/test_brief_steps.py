"""Brief steps: one message per batch of a run's brief steps, claimed and recorded together."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from conveyor.orchestrator.engine.attempt import Attempt, Finished, Outcome
from conveyor.orchestrator.engine.claims import BRIEF_BATCH
from tests.unit.runtime_kit import Harness, pipeline


def brief(n: int, **extra: str) -> list[str]:
    keys = "".join(f", {k}: {v}" for k, v in extra.items())
    return [f"{{name: b{i}, type: brief, needs: []{keys}}}" for i in range(n)]


def all_of(claim: Attempt) -> list[Attempt]:
    return [claim.alone(), *claim.batch]


def test_brief_steps_ready_together_get_one_message_per_batch(h: Harness) -> None:
    h.start(pipeline(*brief(BRIEF_BATCH + 4), "{name: n, type: noop, needs: []}"))

    sent = [ref.step_key for ref, _ in h.recorder.sent]
    # Every other step keeps a message of its own.
    assert sent == ["b0", f"b{BRIEF_BATCH}", "n"]


def test_the_claim_takes_the_runs_other_queued_brief_steps(h: Harness) -> None:
    run_id = h.start(pipeline(*brief(5), "{name: n, type: noop, needs: []}"))
    first, _ = h.recorder.sent.pop(0)

    claim = h.runtime.claim(first, "w1")

    assert claim is not None
    assert [c.ref.step_key for c in all_of(claim)] == ["b0", "b1", "b2", "b3", "b4"]
    statuses = h.statuses(run_id)
    assert {k: v for k, v in statuses.items() if k.startswith("b")} == dict.fromkeys(
        ["b0", "b1", "b2", "b3", "b4"], "running"
    )
    assert statuses["n"] == "queued"  # not brief: its own message, its own worker


def test_a_batch_is_recorded_in_one_go_and_finishes_the_run(h: Harness) -> None:
    run_id = h.start(pipeline(*brief(3), "{name: after, type: brief, needs: [b0, b1, b2]}"))
    first, _ = h.recorder.sent.pop(0)
    claim = h.runtime.claim(first, "w1")
    assert claim is not None

    done = [
        Finished(c.ref, outputs={"n": i}, logs=[("stdout", f"line {i}")])
        for i, c in enumerate(all_of(claim))
    ]
    nxt = h.runtime.record(done, continue_as="w1").next

    # What they made ready is claimed with the result, for the same worker.
    assert nxt is not None and nxt.ref.step_key == "after"
    assert h.recorder.sent == []
    assert h.runtime.record([Finished(nxt.ref, outputs={})]).next is None
    assert h.store.get_run(run_id).status == "succeeded"
    outputs = {s.key: s.outputs for s in h.store.list_steps(run_id)}
    assert outputs["b1"] == {"n": 1}
    lines = [line.text for line in h.store.list_logs(run_id, "b2")]
    assert lines == ["line 2"]


def test_a_failure_in_a_batch_fails_the_run_and_keeps_the_others_results(h: Harness) -> None:
    run_id = h.start(pipeline(*brief(3)))
    first, _ = h.recorder.sent.pop(0)
    claim = h.runtime.claim(first, "w1")
    assert claim is not None
    b0, b1, b2 = all_of(claim)

    h.runtime.record(
        [
            Finished(b0.ref, outputs={}),
            Finished(b1.ref, outcome=Outcome("boom", 1)),
            Finished(b2.ref, outputs={"ok": True}),
        ]
    )

    assert h.statuses(run_id) == {"b0": "succeeded", "b1": "failed", "b2": "succeeded"}
    run = h.store.get_run(run_id)
    assert (run.status, run.error) == ("failed", "step 'b1' failed: boom")


def test_a_message_whose_step_another_batch_took_takes_the_rest(h: Harness) -> None:
    """Messages name the first of each batch; a batch may take another's first step."""
    run_id = h.start(pipeline(*brief(BRIEF_BATCH + 4)))
    heads = [ref for ref, _ in h.recorder.sent]
    assert len(heads) == 2

    # The second message is taken first: its batch starts from the run's first steps.
    second = h.runtime.claim(heads[1], "w2")
    first = h.runtime.claim(heads[0], "w1")

    assert second is not None and first is not None
    taken = [c.ref.step_key for c in all_of(second) + all_of(first)]
    assert Counter(taken) == Counter(f"b{i}" for i in range(BRIEF_BATCH + 4))
    assert set(h.statuses(run_id).values()) == {"running"}


def test_a_duplicate_message_of_a_brief_step_takes_nothing_when_none_is_queued(
    h: Harness,
) -> None:
    h.start(pipeline(*brief(2)))
    ref, _ = h.recorder.sent.pop(0)
    assert h.runtime.claim(ref, "w1") is not None
    assert h.runtime.claim(ref, "w2") is None


def test_brief_steps_wait_for_their_needs_and_retries_keep_their_eta(h: Harness) -> None:
    run_id = h.start(
        pipeline(
            "{name: a, type: noop}",
            "{name: b0, type: brief, needs: [a], retry: {max_attempts: 2, backoff: 30s}}",
            "{name: b1, type: brief, needs: [a]}",
        )
    )
    a, _ = h.recorder.sent.pop(0)
    assert h.runtime.claim(a, "w") is not None
    h.runtime.record([Finished(a, outputs={})])
    assert [r.step_key for r, _ in h.recorder.sent] == ["b0"]  # one message for both
    head, _ = h.recorder.sent.pop(0)
    claim = h.runtime.claim(head, "w")
    assert claim is not None and [c.ref.step_key for c in all_of(claim)] == ["b0", "b1"]

    h.runtime.record([Finished(claim.ref, outcome=Outcome("flaky", 1))])

    retry, eta = h.recorder.sent.pop(0)
    assert (retry.step_key, retry.attempt) == ("b0", 2) and eta is not None
    assert h.statuses(run_id)["b0"] == "queued"


def test_only_results_of_brief_steps_commit_without_waiting_for_the_disk(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chain: a brief step, a step that is not brief, a brief one
    run_id = h.start(
        pipeline(
            "{name: b, type: brief, needs: []}",
            "{name: n, type: noop, needs: [b]}",
            "{name: c, type: brief, needs: [n]}",
        )
    )
    relaxed: list[bool] = []
    opened = h.store.transaction

    @contextlib.contextmanager
    def spied(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with opened(*args, **kwargs) as tx:
            yield tx
            relaxed.append(tx.relaxed)

    monkeypatch.setattr(h.store, "transaction", spied)
    first, _ = h.recorder.sent.pop(0)
    claim = h.runtime.claim(first, "w1")
    assert claim is not None

    # When each result is recorded and the worker goes on with the next step
    n = h.runtime.record([Finished(claim.ref, outputs={})], continue_as="w1").next
    assert n is not None and n.ref.step_key == "n"
    c = h.runtime.record([Finished(n.ref, outputs={})], continue_as="w1").next
    assert c is not None and c.ref.step_key == "c"
    h.runtime.record([Finished(c.ref, outputs={})], continue_as="w1")

    # Then only the last, which records and claims brief steps alone, is relaxed: the
    # first claims a step that is not brief, the second records one
    assert relaxed == [False, False, False, True]
    assert h.store.get_run(run_id).status == "succeeded"
