"""The embedded engine with a step type that misbehaves on purpose (``test.probe``).

Built-in steps are well behaved; a third-party step type may raise anything, return
what is not JSON, ignore cancellation or poll for it. The engine must survive them all.
"""

from __future__ import annotations

import time

import pytest

from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from tests.unit.engine_kit import (
    eventually,
    finish,
    log_text,
    pipeline,
    run,
    start,
    statuses,
    step,
)


def probe(action: str, name: str = "p", extra: str = "", **config: object) -> str:
    fields = "".join(f", {k}: {v}" for k, v in config.items())
    return pipeline(
        f"- {{name: {name}, type: test.probe{extra}, config: {{action: {action}{fields}}}}}"
    )


def test_an_exception_in_a_step_fails_it_with_its_traceback_logged(
    engine: EmbeddedEngine,
) -> None:
    # Given a step type that raises ValueError
    # When it runs
    result = run(engine, probe("raise"))

    # Then the step and the run fail with the exception's type and message...
    assert step(engine, result.id, "p").last_error == "ValueError: the probe broke on purpose"
    assert result.error == "step 'p' failed: ValueError: the probe broke on purpose"
    # ...and the traceback is in the step's log, as system lines
    logs = engine.store.list_logs(result.id, "p")
    texts = [line.text for line in logs]
    assert texts[0] == "Traceback (most recent call last):"
    assert any('raise ValueError("the probe broke on purpose")' in t for t in texts)
    assert texts[-2:] == [
        "ValueError: the probe broke on purpose",
        "step failed: ValueError: the probe broke on purpose",
    ]
    assert {line.stream for line in logs} == {"system"}

    # And the engine runs the next pipeline as if nothing happened
    assert run(engine, probe("read_steps")).status == "succeeded"


@pytest.mark.parametrize(
    ("action", "config", "error"),
    [
        pytest.param(
            "non_json",
            {},
            "outputs are not JSON: output 'when': Object of type set is not JSON serializable",
            id="not-json",
        ),
        pytest.param(
            "not_mapping", {}, "the step returned list, not a mapping of outputs", id="a-list"
        ),
        pytest.param(
            "huge",
            {"size": 2_000_000},
            "outputs are 2000012 bytes of JSON; the limit is 1048576 bytes",
            id="too-big",
        ),
        pytest.param(
            "nul_output",
            {},
            "outputs cannot be stored: text: contains a NUL character (U+0000)",
            id="nul",
        ),
        pytest.param(
            "deep_output",
            {"size": 300},
            "outputs cannot be stored: deep" + ".a" * 38 + "...: nests more than 240 levels deep",
            id="too-deep",
        ),
    ],
)
def test_outputs_that_cannot_be_stored_fail_the_step_clearly(
    engine: EmbeddedEngine, action: str, config: dict[str, object], error: str
) -> None:
    result = run(engine, probe(action, **config))

    record = step(engine, result.id, "p")
    assert (record.status, record.last_error, record.outputs) == ("failed", error, None)
    assert log_text(engine, result.id, "p")[-1] == f"step failed: {error}"


def test_steps_see_earlier_outputs_without_templates(engine: EmbeddedEngine) -> None:
    # Given a step type that reads ctx.steps, with no template in its config
    text = pipeline("""
        - {name: a, type: step.set, config: {values: {x: "1"}}}
        - {name: b, type: test.probe, config: {action: read_steps}}
    """)

    result = run(engine, text)

    assert step(engine, result.id, "b").outputs == {"seen": {"a": {"x": "1"}}}


def test_a_step_deaf_to_cancellation_is_not_recorded_as_succeeded(
    engine: EmbeddedEngine, settings: Settings
) -> None:
    # Given a step that works for a second and never looks at ctx.cancelled
    run_id = start(engine, probe("ignore_cancel", seconds=1))
    eventually(lambda: log_text(engine, run_id, "p"), 5, "the step to start")

    # When the run is cancelled
    engine.cancel(run_id)

    # Then the run is cancelled at once; the step, once it returns, is cancelled too
    assert engine.store.get_run(run_id).status == "cancelled"
    eventually(lambda: statuses(engine, run_id)["p"] != "running", 5, "the step to return")
    record = step(engine, run_id, "p")
    assert (record.status, record.outputs) == ("cancelled", None)
    assert record.last_error == "cancelled by user"
    assert log_text(engine, run_id, "p")[-1] == "step cancelled: cancelled by user"
    # ...and the workspace it touched after the cancel is not left behind
    workspace = settings.workspace_root / run_id
    eventually(lambda: not workspace.exists(), 2, "the workspace to go")


def test_a_step_deaf_to_its_timeout_fails_for_it(engine: EmbeddedEngine) -> None:
    result = run(engine, probe("ignore_cancel", extra=", timeout: 200ms", seconds=0.6))

    record = step(engine, result.id, "p")
    assert (record.status, record.last_error) == ("failed", "timed out after 200ms")


def test_a_step_that_watches_ctx_cancelled_stops_when_cancelled(engine: EmbeddedEngine) -> None:
    # Given a step that would work for ten seconds, checking ctx.cancelled as it goes
    run_id = start(engine, probe("cooperative", seconds=10))
    eventually(lambda: log_text(engine, run_id, "p"), 5, "the step to start")

    # When the run is cancelled
    began = time.monotonic()
    engine.cancel(run_id)

    # Then it stops at once and is recorded cancelled
    eventually(lambda: statuses(engine, run_id)["p"] == "cancelled", 5, "the step to stop")
    assert time.monotonic() - began < 5  # well before its ten seconds of work
    assert "noticed the cancellation" in log_text(engine, run_id, "p")
    assert finish(engine, run_id).status == "cancelled"


def test_a_step_that_watches_ctx_cancelled_stops_at_its_timeout(engine: EmbeddedEngine) -> None:
    began = time.monotonic()

    result = run(engine, probe("cooperative", extra=", timeout: 200ms", seconds=10))

    assert time.monotonic() - began < 6  # well before its ten seconds of work
    record = step(engine, result.id, "p")
    assert (record.status, record.last_error) == ("failed", "timed out after 200ms")
    assert "noticed the cancellation" in log_text(engine, result.id, "p")


def test_log_lines_keep_their_order_however_they_are_flushed(engine: EmbeddedEngine) -> None:
    # Given a step that logs more lines than one batch, while the monitor flushes too
    result = run(engine, probe("chatty", size=3000))

    # Then the store has them all, in the order they were logged
    assert result.status == "succeeded"
    assert log_text(engine, result.id, "p") == [f"line {n}" for n in range(3000)]


def test_a_step_type_missing_where_the_step_runs_fails_it_clearly(
    engine: EmbeddedEngine, settings: Settings
) -> None:
    # Given a plan compiled where test.probe is installed
    compiled = engine.compile(probe("read_steps"))

    # When an engine without it runs the plan
    bare = EmbeddedEngine(settings)
    try:
        record = bare.start(compiled.select(None), compiled.source)
        result = bare.wait(record.id, timeout=10, poll=0.05)
    finally:
        bare.close()

    # Then the step fails and says what is missing
    assert result.error == "step 'p' failed: step type 'test.probe' is not installed here"
