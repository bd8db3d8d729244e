"""The embedded engine stopping steps: retries, timeouts and cancellation, for real.

A long-running command writes its pid first, so that the test can check it was killed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from tests.unit.engine_kit import (
    alive,
    eventually,
    finish,
    log_text,
    pipeline,
    run,
    start,
    statuses,
    step,
    step_events,
)


def wait_pid(pidfile: Path) -> int:
    text = eventually(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "the pid")
    return int(text)


# --- retries ----------------------------------------------------------------------


def test_a_failing_step_is_retried_with_growing_waits(engine: EmbeddedEngine) -> None:
    # Given a step that fails twice (counting in the run's workspace) and then passes
    text = pipeline("""
        - name: flaky
          type: step.shell_exec
          retry: {max_attempts: 3, backoff: 200ms, backoff_factor: 2, on_exit_codes: [75]}
          config:
            commands:
              - n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "try $n"
              - '[ "$(cat count)" -ge 3 ] || exit 75'
    """)

    # When it runs
    result = run(engine, text)

    # Then it took three attempts, each wait announced in the events and honoured
    assert result.status == "succeeded"
    record = step(engine, result.id, "flaky")
    assert (record.attempts, record.last_error) == (3, None)
    events = step_events(engine, result.id, "flaky")
    retries = [e for e in events if e.type == "step.queued" and "retry_in" in e.payload]
    assert [(e.payload["next_attempt"], e.payload["retry_in"]) for e in retries] == [
        (2, 0.2),
        (3, 0.4),
    ]
    assert all(e.payload["exit_code"] == 75 for e in retries)
    starts = [e for e in events if e.type == "step.running"]
    assert [e.payload["attempt"] for e in starts] == [1, 2, 3]
    for retry, started in zip(retries, starts[1:], strict=True):
        assert (started.created_at - retry.created_at).total_seconds() >= retry.payload["retry_in"]
    assert [line.attempt for line in engine.store.list_logs(result.id, "flaky")][-1] == 3
    assert "try 3" in log_text(engine, result.id, "flaky")


def test_only_listed_exit_codes_are_retried(engine: EmbeddedEngine) -> None:
    # Given a step that retries only on exit code 75 and fails with 3
    text = pipeline("""
        - name: a
          type: step.shell_exec
          retry: {max_attempts: 3, on_exit_codes: [75]}
          config: {commands: ["exit 3"]}
    """)

    # When it runs
    result = run(engine, text)

    # Then it failed at once, without a retry
    record = step(engine, result.id, "a")
    assert (record.status, record.attempts, record.exit_code) == ("failed", 1, 3)
    assert not [e for e in step_events(engine, result.id, "a") if "retry_in" in e.payload]


# --- timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "message"),
    [
        pytest.param("step", "timed out after 500ms", id="step-timeout"),
        pytest.param("config", "timed out after 500ms", id="shell-config-timeout"),
    ],
)
def test_a_step_past_its_timeout_fails_and_its_process_dies(
    engine: EmbeddedEngine, tmp_path: Path, where: str, message: str
) -> None:
    # Given a step that sleeps far longer than its half-second limit
    pidfile = tmp_path / "pid"
    command = f"echo $$ > {pidfile}; exec sleep 30"
    if where == "step":
        body = f"{{name: slow, type: step.shell_exec, timeout: 500ms, config: {{commands: ['{command}']}}}}"
    else:
        body = f"{{name: slow, type: step.shell_exec, config: {{timeout: 500ms, commands: ['{command}']}}}}"
    text = pipeline(f"- {body}\n- {{name: next, type: step.log, config: {{message: hi}}}}")
    began = time.monotonic()

    # When it runs
    result = run(engine, text)

    # Then the step failed with the limit in its error, soon, and its process is gone
    assert time.monotonic() - began < 5
    record = step(engine, result.id, "slow")
    assert (record.status, record.last_error) == ("failed", message)
    assert result.status == "failed"
    assert result.error == f"step 'slow' failed: {message}"
    assert statuses(engine, result.id)["next"] == "cancelled"
    failed = step_events(engine, result.id, "slow")[-1]
    assert (failed.type, failed.payload["kind"]) == ("step.failed", "timeout")
    assert not alive(int(pidfile.read_text()))


def test_a_run_past_its_timeout_fails_and_stops_its_step(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    # Given a pipeline limited to half a second whose first step sleeps
    pidfile = tmp_path / "pid"
    text = pipeline(
        f"""
        - {{name: slow, type: step.shell_exec, config: {{commands: ['echo $$ > {pidfile}; exec sleep 30']}}}}
        - {{name: next, type: step.log, config: {{message: hi}}}}
        """,
        header="timeout: 500ms",
    )
    began = time.monotonic()

    # When it runs
    result = run(engine, text)

    # Then the run failed for its timeout, the sleep was killed, nothing else ran
    assert time.monotonic() - began < 5
    assert (result.status, result.error) == ("failed", "run timed out after 500ms")
    eventually(lambda: statuses(engine, result.id)["slow"] != "running", 5, "the step to stop")
    record = step(engine, result.id, "slow")
    assert (record.status, record.last_error) == ("cancelled", "run timed out after 500ms")
    assert statuses(engine, result.id)["next"] == "cancelled"
    eventually(lambda: not alive(int(pidfile.read_text())), 5, "the process to die")


# --- cancellation -----------------------------------------------------------------


def test_cancel_stops_a_running_step_and_the_rest(engine: EmbeddedEngine, tmp_path: Path) -> None:
    # Given a run whose first step sleeps, with two steps after it
    pidfile = tmp_path / "pid"
    text = pipeline(f"""
        - {{name: slow, type: step.shell_exec, config: {{commands: ['echo $$ > {pidfile}; exec sleep 30']}}}}
        - {{name: next, type: step.log, config: {{message: hi}}}}
        - {{name: last, type: step.log, config: {{message: hi}}}}
    """)
    run_id = start(engine, text)
    pid = wait_pid(pidfile)

    # When the user cancels it
    began = time.monotonic()
    engine.cancel(run_id)

    # Then the sleep dies promptly and every step ends cancelled
    eventually(lambda: statuses(engine, run_id)["slow"] == "cancelled", 5, "slow cancelled")
    assert time.monotonic() - began < 3
    assert not alive(pid)
    result = finish(engine, run_id)
    assert (result.status, result.error) == ("cancelled", "cancelled by user")
    assert statuses(engine, run_id) == {
        "slow": "cancelled",
        "next": "cancelled",
        "last": "cancelled",
    }
    assert step(engine, run_id, "slow").last_error == "cancelled by user"
    assert log_text(engine, run_id, "slow")[-1] == "step cancelled: cancelled by user"


def test_a_cancel_from_another_process_reaches_the_running_step(
    engine: EmbeddedEngine, settings: Settings, tmp_path: Path
) -> None:
    # Given a running sleep in this engine
    pidfile = tmp_path / "pid"
    text = pipeline(f"""
        - {{name: slow, type: step.shell_exec, config: {{commands: ['echo $$ > {pidfile}; exec sleep 30']}}}}
    """)
    run_id = start(engine, text)
    pid = wait_pid(pidfile)

    # When another process, with no executor, cancels the run in the database
    other = SqlStore(settings.resolved_database_url)
    try:
        Runtime(other, TemplateEngine()).cancel(run_id)
    finally:
        other.close()
    began = time.monotonic()

    # Then this engine notices at its next heartbeat and stops the step
    eventually(lambda: statuses(engine, run_id)["slow"] == "cancelled", 5, "slow cancelled")
    assert time.monotonic() - began < settings.heartbeat_seconds + 2
    assert not alive(pid)
    assert step(engine, run_id, "slow").last_error == "cancelled by user"
    # ...and the run's workspace is removed here, where the step ran
    eventually(lambda: not (settings.workspace_root / run_id).exists(), 2, "workspace removed")


def test_the_engine_keeps_working_after_a_cancelled_run(engine: EmbeddedEngine) -> None:
    text = pipeline("""
        - {name: a, type: step.shell_exec, config: {commands: ["sleep 30"]}}
    """)
    run_id = start(engine, text)
    eventually(lambda: statuses(engine, run_id)["a"] == "running", 5, "a running")
    engine.cancel(run_id)
    finish(engine, run_id)

    again = run(engine, pipeline("- {name: b, type: step.log, config: {message: hi}}"))

    assert again.status == "succeeded"
