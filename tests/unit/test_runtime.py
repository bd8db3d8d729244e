"""The run state machine, driven step by step with scripted outcomes (no threads).

Every test runs on each store (``h`` is built on ``store``): the twin, SQLite, Postgres.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine.attempt import Finished, Outcome
from conveyor.orchestrator.errors import Conflict
from tests.unit.runtime_kit import FAIL, A, B, C, Harness, pipeline

CASES = [
    pytest.param(
        [A, B, C],
        {},
        "succeeded",
        {"a": "succeeded", "b": "succeeded", "c": "succeeded"},
        id="chain",
    ),
    pytest.param(
        [A, B, C],
        {"a": [FAIL]},
        "failed",
        {"a": "failed", "b": "cancelled", "c": "cancelled"},
        id="stop-on-error",
    ),
    pytest.param(
        ["{name: a, type: noop, on_error: continue}", B],
        {"a": [FAIL]},
        "succeeded",
        {"a": "failed", "b": "succeeded"},
        id="continue-on-error",
    ),
    pytest.param(
        ["{name: a, type: noop, retry: {max_attempts: 2}}", B],
        {"a": [FAIL, "ok"]},
        "succeeded",
        {"a": "succeeded", "b": "succeeded"},
        id="retry-then-pass",
    ),
    pytest.param(
        ["{name: a, type: noop, retry: {max_attempts: 3}}"],
        {"a": [FAIL, FAIL, FAIL]},
        "failed",
        {"a": "failed"},
        id="retries-exhausted",
    ),
    pytest.param(
        ["{name: a, type: noop, retry: {max_attempts: 3, on_exit_codes: [75]}}"],
        {"a": [FAIL]},
        "failed",
        {"a": "failed"},
        id="retry-only-on-listed-codes",
    ),
    pytest.param(
        ["{name: a, type: noop, retry: {max_attempts: 2, on_errors: ['reset']}}"],
        {"a": [Outcome("connection reset"), "ok"]},
        "succeeded",
        {"a": "succeeded"},
        id="retry-on-error-text",
    ),
    pytest.param(
        ["{name: a, type: noop, if: 'false'}", B],
        {},
        "succeeded",
        {"a": "skipped", "b": "succeeded"},
        id="if-false-skips",
    ),
    pytest.param(
        ["{name: a, type: noop, skip_if: '{{ .v == \"1\" }}'}"],
        {},
        "succeeded",
        {"a": "skipped"},
        id="skip-if-true",
    ),
    pytest.param(
        [A, "{name: b, type: noop, if: '{{ .steps.a.value == \"a\" }}'}"],
        {},
        "succeeded",
        {"a": "succeeded", "b": "succeeded"},
        id="if-reads-outputs",
    ),
    pytest.param(
        [
            A,
            B,
            "{name: cleanup, type: noop, if: '{{ always() }}'}",
            "{name: alert, type: noop, needs: [a], if: '{{ failure() }}'}",
        ],
        {"a": [FAIL]},
        "failed",
        {"a": "failed", "b": "cancelled", "cleanup": "succeeded", "alert": "succeeded"},
        id="always-and-failure-run-after-failure",
    ),
    pytest.param(
        [A, "{name: alert, type: noop, if: '{{ failure() }}'}"],
        {},
        "succeeded",
        {"a": "succeeded", "alert": "skipped"},
        id="failure-skips-on-success",
    ),
    pytest.param(
        [A, "{name: b, type: noop, if: '{{ .nope.x }}'}"],
        {},
        "failed",
        {"a": "succeeded", "b": "failed"},
        id="condition-error-fails-step",
    ),
]


@pytest.mark.parametrize(("steps", "script", "run_status", "expected"), CASES)
def test_runs_end_as_their_steps_decide(
    h: Harness,
    steps: list[str],
    script: dict[str, list[Any]],
    run_status: str,
    expected: dict[str, str],
) -> None:
    run_id = h.start(pipeline(*steps), {"v": "1"})

    h.drive(run_id, {k: list(v) for k, v in script.items()})

    assert h.statuses(run_id) == expected
    assert h.store.get_run(run_id).status == run_status


def test_steps_with_no_needs_start_together(h: Harness) -> None:
    h.start(
        pipeline(
            "{name: a, type: noop, needs: []}",
            "{name: b, type: noop, needs: []}",
            "{name: c, type: noop, needs: [a, b]}",
        )
    )

    assert sorted(ref.step_key for ref, _ in h.recorder.sent) == ["a", "b"]


def test_a_failed_run_names_the_step_and_its_error(h: Harness) -> None:
    run_id = h.start(pipeline(A, B))
    h.drive(run_id, {"a": [Outcome("exit 3", 3)]})

    run = h.store.get_run(run_id)
    assert run.error == "step 'a' failed: exit 3"
    assert h.store.list_steps(run_id)[1].last_error == "not run: step 'a' failed"


def test_a_retry_waits_for_its_backoff(h: Harness) -> None:
    run_id = h.start(
        pipeline("{name: a, type: noop, retry: {max_attempts: 3, backoff: 10s, backoff_factor: 3}}")
    )
    ref, _ = h.recorder.sent.pop()
    h.runtime.claim(ref, "w")

    h.runtime.record([Finished(ref, outcome=FAIL)])

    retry, eta = h.recorder.sent.pop()
    assert retry.attempt == 2 and eta is not None
    assert timedelta(seconds=9) < eta - utcnow() <= timedelta(seconds=10)
    assert h.runtime.claim(retry, "w") is None  # too early: the eta has not come
    step = h.store.list_steps(run_id)[0]
    assert (step.status.value, step.attempts, step.last_error) == ("queued", 2, "boom")


def test_a_duplicate_delivery_is_claimed_once(h: Harness) -> None:
    h.start(pipeline(A))
    ref, _ = h.recorder.sent.pop()

    assert h.runtime.claim(ref, "w1") is not None
    assert h.runtime.claim(ref, "w2") is None


def test_a_stale_attempt_cannot_overwrite_the_current_one(h: Harness) -> None:
    run_id = h.start(pipeline("{name: a, type: noop, retry: {max_attempts: 2}}"))
    first, _ = h.recorder.sent.pop()
    h.runtime.claim(first, "w1")
    h.runtime.record([Finished(first, outcome=FAIL)])
    second, _ = h.recorder.sent.pop()
    h.runtime.claim(second, "w2")

    h.runtime.record(
        [Finished(first, outputs={"late": True})]
    )  # the first worker reports again, late

    step = h.store.list_steps(run_id)[0]
    assert (step.status.value, step.attempts, step.outputs) == ("running", 2, None)


def test_cancel_stops_what_has_not_started(h: Harness) -> None:
    run_id = h.start(pipeline(A, B))
    ref, _ = h.recorder.sent.pop()

    h.runtime.cancel(run_id)

    assert h.runtime.claim(ref, "w") is None
    assert h.statuses(run_id) == {"a": "cancelled", "b": "cancelled"}
    assert h.store.get_run(run_id).status == "cancelled"
    with pytest.raises(Conflict, match="already cancelled"):
        h.runtime.cancel(run_id)


def test_a_running_step_ends_cancelled_when_its_run_was_cancelled(h: Harness) -> None:
    run_id = h.start(pipeline(A))
    ref, _ = h.recorder.sent.pop()
    h.runtime.claim(ref, "w")
    h.runtime.cancel(run_id)

    h.runtime.record([Finished(ref, outcome=Outcome("cancelled", kind="cancelled"))])

    assert h.statuses(run_id) == {"a": "cancelled"}


def test_a_run_past_its_timeout_fails(h: Harness) -> None:
    run_id = h.start(pipeline(A, extra="    timeout: 1ms\n"))
    import time

    time.sleep(0.01)
    assert h.runtime.expire(run_id)

    run = h.store.get_run(run_id)
    assert (run.status.value, run.error) == ("failed", "run timed out after 1ms")
    assert h.statuses(run_id) == {"a": "cancelled"}


def test_every_move_is_an_event_without_gaps(h: Harness) -> None:
    run_id = h.start(pipeline(A, B))
    h.drive(run_id, {})

    events = h.store.list_events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, e.step_key) for e in events] == [
        ("run.created", None),
        ("step.queued", "a"),
        ("step.running", "a"),
        ("step.succeeded", "a"),
        ("step.queued", "b"),
        ("step.running", "b"),
        ("step.succeeded", "b"),
        ("run.succeeded", None),
    ]
