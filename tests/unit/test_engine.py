"""The embedded engine running real pipelines: built-in steps, local sandbox, SQLite.

Timing-sensitive tests only ever assert generous upper bounds.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from tests.unit.engine_kit import (
    eventually,
    finish,
    log_text,
    open_engine,
    pipeline,
    run,
    start,
    statuses,
    step,
)

# --- parallelism ------------------------------------------------------------------


def test_steps_without_needs_run_at_the_same_time(engine: EmbeddedEngine) -> None:
    # Given two independent steps that each sleep half a second
    text = pipeline("""
        - {name: a, type: step.shell_exec, needs: [], config: {commands: ["sleep 0.5"]}}
        - {name: b, type: step.shell_exec, needs: [], config: {commands: ["sleep 0.5"]}}
    """)

    # When the run goes
    result = run(engine, text)

    # Then both succeed, and each started before the other had finished
    assert result.status == "succeeded"
    a, b = engine.store.list_steps(result.id)
    assert a.started_at and b.started_at and a.completed_at and b.completed_at
    assert a.started_at < b.completed_at and b.started_at < a.completed_at


def test_max_parallel_bounds_how_many_steps_run_at_once(settings: Settings) -> None:
    # Given an engine with two workers and four independent steps
    steps = "\n".join(
        f'- {{name: s{i}, type: step.shell_exec, needs: [], config: {{commands: ["sleep 0.2"]}}}}'
        for i in range(4)
    )
    with open_engine(settings.model_copy(update={"max_parallel": 2})) as engine:
        # When they run
        result = run(engine, pipeline(steps))
        records = engine.store.list_steps(result.id)

    # Then no moment ever saw more than two of them running
    assert result.status == "succeeded"
    moments = sorted(
        [(s.started_at, 1) for s in records] + [(s.completed_at, -1) for s in records],
        key=lambda m: (m[0], m[1]),
    )
    running = peak = 0
    for _, change in moments:
        running += change
        peak = max(peak, running)
    assert peak == 2


# --- templates --------------------------------------------------------------------


def test_outputs_params_env_and_matrix_reach_later_steps(engine: EmbeddedEngine) -> None:
    # Given steps that publish outputs, a pipeline env built from a param, and a matrix
    text = pipeline(
        """
        - name: a
          type: step.shell_exec
          config: {commands: ['echo "x=from-a" >> "$CONVEYOR_OUTPUT"']}
        - {name: a-b, type: step.set, needs: [], config: {values: {x: from-a-b}}}
        - name: build
          type: step.set
          needs: []
          matrix: {os: [linux, mac]}
          config: {values: {target: "{{ .matrix.os }}-{{ .version }}"}}
        - name: use
          type: step.shell_exec
          needs: [a, a-b, build]
          config:
            commands:
              - echo "a={{ .steps.a.x }}" >> "$CONVEYOR_OUTPUT"
              - echo "ab={{ index .steps "a-b" "x" }}" >> "$CONVEYOR_OUTPUT"
              - echo "linux={{ index .steps "build[os=linux]" "target" }}" >> "$CONVEYOR_OUTPUT"
              - echo "tag=$TAG" >> "$CONVEYOR_OUTPUT"
              - echo "version={{ .version }}" >> "$CONVEYOR_OUTPUT"
        - {name: say, type: step.log, config: {message: "tag {{ .env.TAG }} for {{ .version }}"}}
        """,
        header='env: {TAG: "v{{ .version }}-{{ .Pipeline }}"}',
    )

    # When it runs with a version param
    result = run(engine, text, {"version": "1.2"})

    # Then every value arrived where it was asked for
    assert result.status == "succeeded", result.error
    outputs = step(engine, result.id, "use").outputs
    assert {k: outputs[k] for k in ("a", "ab", "linux", "tag", "version")} == {
        "a": "from-a",
        "ab": "from-a-b",
        "linux": "linux-1.2",
        "tag": "v1.2-p",
        "version": "1.2",
    }
    assert step(engine, result.id, "build[os=mac]").outputs == {"target": "mac-1.2"}
    assert log_text(engine, result.id, "say") == ["tag v1.2-p for 1.2"]


def test_template_values_reach_the_shell_as_data_not_code(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    # Given a param that is a command substitution, used bare, quoted and through env
    text = pipeline(
        """
        - name: a
          type: step.shell_exec
          config:
            commands:
              - echo {{ .version }}
              - echo "{{ .version }}" '{{ .version }}'
              - echo $V "$V"
              - 'echo "seen=$(ls | tr "\\n" ,)" >> "$CONVEYOR_OUTPUT"'
        """,
        header='env: {V: "{{ .version }}"}',
    )

    # When it runs
    result = run(engine, text, {"version": "$(touch pwned)`touch pwned2`"})

    # Then the value was printed, never executed: no file was created anywhere
    assert result.status == "succeeded", result.error
    logs = log_text(engine, result.id, "a")
    assert '$ echo "$CONVEYOR_VALUE_1"' in logs  # the command text holds a reference only
    assert logs.count("$(touch pwned)`touch pwned2`") == 1
    assert "$(touch pwned)`touch pwned2` $(touch pwned)`touch pwned2`" in logs
    assert "pwned" not in step(engine, result.id, "a").outputs["seen"]
    assert not list(tmp_path.rglob("pwned*"))
    assert not list(Path.cwd().glob("pwned*"))


def test_a_template_error_fails_the_step_and_names_the_field(engine: EmbeddedEngine) -> None:
    # Given a step that reads an output of a step that has none
    text = pipeline("""
        - {name: a, type: step.set, config: {values: {x: "1"}}}
        - {name: b, type: step.log, config: {message: "{{ .steps.a.nope }}"}}
    """)

    # When it runs
    result = run(engine, text)

    # Then the step fails with the field and the missing key in its error
    assert result.status == "failed"
    error = step(engine, result.id, "b").last_error
    assert error.startswith("config.message: ") and "nope" in error


# --- logs -------------------------------------------------------------------------


def test_log_lines_reach_the_store_while_the_step_still_runs(engine: EmbeddedEngine) -> None:
    # Given a step that prints a line and then works for two seconds
    text = pipeline("""
        - {name: slow, type: step.shell_exec, config: {commands: ["echo first line; sleep 2"]}}
    """)
    run_id = start(engine, text)

    # When the line has been printed
    eventually(lambda: "first line" in log_text(engine, run_id, "slow"), 1.5, "the first line")

    # Then it is in the store while the step is still running
    assert statuses(engine, run_id) == {"slow": "running"}
    engine.cancel(run_id)
    assert finish(engine, run_id).status == "cancelled"


def test_a_failed_step_shows_why_in_its_log_and_error(engine: EmbeddedEngine) -> None:
    # Given a command that fails with exit code 3
    text = pipeline("""
        - {name: a, type: step.shell_exec, config: {commands: ["echo trying", "exit 3"]}}
    """)

    # When it runs
    result = run(engine, text)

    # Then run, step, log and exit code all tell the same story
    record = step(engine, result.id, "a")
    assert (record.status, record.exit_code) == ("failed", 3)
    assert record.last_error == "command 2 of 2 exited with 3: exit 3"
    assert result.error == "step 'a' failed: command 2 of 2 exited with 3: exit 3"
    assert log_text(engine, result.id, "a")[-1] == (
        "step failed: command 2 of 2 exited with 3: exit 3"
    )


def test_a_step_printing_binary_succeeds_and_its_output_reads_back(
    engine: EmbeddedEngine,
) -> None:
    # Given a command that prints bytes that are no text: NUL and invalid UTF-8
    text = pipeline(r"""
        - {name: a, type: step.shell_exec, config: {commands: ["printf 'x\\000y\\377z\\n'"]}}
    """)

    # When it runs
    result = run(engine, text)

    # Then the step succeeds, and its log and stdout show the bytes as U+FFFD
    record = step(engine, result.id, "a")
    assert (record.status, record.last_error) == ("succeeded", None)
    assert record.outputs is not None
    assert record.outputs["stdout"] == "x\ufffdy\ufffdz"
    assert "x\ufffdy\ufffdz" in log_text(engine, result.id, "a")


# --- secrets ----------------------------------------------------------------------

SECRET = "s3cr3t-Value-42"


def _database_text(settings: Settings) -> str:
    path = settings.data_dir / "conveyor.db"
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_a_secret_works_in_commands_and_is_masked_everywhere(
    engine: EmbeddedEngine, settings: Settings
) -> None:
    # Given steps that use a secret, print it, publish it, and fail with it
    text = pipeline("""
        - name: use
          type: step.shell_exec
          config:
            commands:
              - v={{ .secrets.TOKEN }}; echo "sha=$(printf %s "$v" | sha256sum | cut -c1-64)" >> "$CONVEYOR_OUTPUT"
              - echo "the token is {{ .secrets.TOKEN }}"
              - echo "copy={{ .secrets.TOKEN }}" >> "$CONVEYOR_OUTPUT"
        - name: fail
          type: step.shell_exec
          config: {commands: ['echo "bad {{ .secrets.TOKEN }}" >&2; exit 1']}
        - {name: leak, type: test.probe, needs: [fail], if: "{{ always() }}", config: {action: leak_secret}}
    """)

    # When it runs with the secret
    result = run(engine, text, secrets={"TOKEN": SECRET})

    # Then the command saw the real value...
    use = step(engine, result.id, "use")
    assert use.outputs["sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    # ...while logs, outputs and errors show only the mask
    assert "the token is ***" in log_text(engine, result.id, "use")
    assert use.outputs["copy"] == "***"
    assert "bad ***" in log_text(engine, result.id, "fail")
    leak = step(engine, result.id, "leak")
    assert leak.last_error == "ValueError: refused token ***"
    assert "the token is ***" in log_text(engine, result.id, "leak")
    failed = [e for e in engine.store.list_events(result.id) if e.type == "step.failed"]
    assert failed[-1].payload["error"] == "ValueError: refused token ***"
    # ...and the value itself was never written to the database
    engine.close()
    assert SECRET not in _database_text(settings)
    assert "***" in _database_text(settings)


# --- conditions and errors --------------------------------------------------------


def test_conditions_and_on_error_decide_what_runs(engine: EmbeddedEngine) -> None:
    # Given a failing step that may fail, conditions on params and outputs, a cleanup
    text = pipeline(
        """
        - {name: flaky, type: step.shell_exec, on_error: continue, config: {commands: ["exit 1"]}}
        - {name: gate, type: step.set, needs: [], config: {values: {go: "yes"}}}
        - {name: deploy, type: step.log, needs: [gate], if: '{{ eq .steps.gate.go "yes" }}', config: {message: deploying}}
        - {name: docs, type: step.log, needs: [gate], skip_if: '{{ .env.DOCS == "off" }}', config: {message: docs}}
        - {name: prod, type: step.log, needs: [gate], if: '{{ .target == "prod" }}', config: {message: prod}}
        - {name: break, type: step.shell_exec, needs: [deploy, happy], config: {commands: ["exit 2"]}}
        - {name: after, type: step.log, needs: [break], config: {message: never}}
        - {name: alert, type: step.log, needs: [break], if: "{{ failure() }}", config: {message: alerting}}
        - {name: cleanup, type: step.log, needs: [break], if: "{{ always() }}", config: {message: cleaning}}
        - {name: happy, type: step.log, needs: [flaky], if: "{{ success() }}", config: {message: ok}}
        """,
        header='env: {DOCS: "{{ .docs }}"}',
    )

    # When it runs
    result = run(engine, text, {"target": "staging", "docs": "off"})

    # Then each step did what its condition said
    assert statuses(engine, result.id) == {
        "flaky": "failed",
        "gate": "succeeded",
        "deploy": "succeeded",
        "docs": "skipped",
        "prod": "skipped",
        "happy": "succeeded",
        "break": "failed",
        "after": "cancelled",
        "alert": "succeeded",
        "cleanup": "succeeded",
    }
    assert result.status == "failed"
    assert result.error == "step 'break' failed: command 1 of 1 exited with 2: exit 2"
    assert log_text(engine, result.id, "alert") == ["alerting"]


def test_a_step_allowed_to_fail_leaves_the_run_green(engine: EmbeddedEngine) -> None:
    text = pipeline("""
        - {name: lint, type: step.shell_exec, on_error: continue, config: {commands: ["exit 1"]}}
        - {name: test, type: step.shell_exec, config: {commands: ["true"]}}
    """)

    result = run(engine, text)

    assert result.status == "succeeded"
    assert statuses(engine, result.id) == {"lint": "failed", "test": "succeeded"}


# --- delivery ---------------------------------------------------------------------


def test_a_second_delivery_of_a_finished_step_does_nothing(engine: EmbeddedEngine) -> None:
    # Given a run whose one step has run
    text = pipeline("""
        - {name: a, type: step.shell_exec, config: {commands: ["echo once"]}}
    """)
    result = run(engine, text)
    events, logs = engine.store.list_events(result.id), log_text(engine, result.id)

    # When the same message is delivered again
    engine.executor.execute(StepRef(result.id, "a", 1, "sandbox"))

    # Then nothing ran and nothing was written
    assert engine.store.list_events(result.id) == events
    assert log_text(engine, result.id) == logs
    assert step(engine, result.id, "a").attempts == 1


# --- workspaces -------------------------------------------------------------------


def test_steps_of_a_run_share_a_workspace_that_goes_when_the_run_ends(
    engine: EmbeddedEngine, settings: Settings
) -> None:
    # Given a step that writes a file and a later one that reads it
    text = pipeline("""
        - {name: write, type: step.shell_exec, config: {commands: ["mkdir -p out && echo built > out/app"]}}
        - {name: read, type: step.shell_exec, config: {commands: ['echo "got=$(cat out/app)" >> "$CONVEYOR_OUTPUT"']}}
    """)

    # When the run goes
    result = run(engine, text)

    # Then the second step read the first one's file, and the workspace is gone
    assert step(engine, result.id, "read").outputs["got"] == "built"
    workspace = settings.workspace_root / result.id
    eventually(lambda: not workspace.exists(), 2, "the workspace to go")


def test_two_runs_do_not_see_each_others_files(engine: EmbeddedEngine) -> None:
    # Given two runs at once, each writing its own file and then listing the workspace
    text = pipeline("""
        - name: a
          type: step.shell_exec
          config:
            commands:
              - echo {{ .who }} > "{{ .who }}.txt"
              - sleep 0.3
              - echo "files=$(ls)" >> "$CONVEYOR_OUTPUT"
    """)
    first, second = start(engine, text, {"who": "one"}), start(engine, text, {"who": "two"})

    # When both finish
    runs = [finish(engine, first), finish(engine, second)]

    # Then each saw only its own file
    assert [step(engine, r.id, "a").outputs["files"] for r in runs] == ["one.txt", "two.txt"]


# --- brief steps --------------------------------------------------------------------


def test_brief_steps_of_a_run_are_taken_together_and_each_recorded(
    engine: EmbeddedEngine,
) -> None:
    # Given twenty independent step.set steps, one log step, and a step that reads them
    sets = "\n".join(
        f"- {{name: s{i}, type: step.set, needs: [], config: {{values: {{n: '{i}'}}}}}}"
        for i in range(20)
    )
    text = pipeline(
        sets
        + "\n- {name: say, type: step.log, needs: [], config: {message: hello}}"
        + "\n- {name: sum, type: step.log, needs: ["
        + ", ".join(f"s{i}" for i in range(20))
        + "], config: {message: '{{ .steps.s0.n }}-{{ .steps.s19.n }}'}}"
    )

    # When the run goes
    result = run(engine, text)

    # Then each ran once, with its outputs and logs, and the last saw all of them
    assert result.status == "succeeded"
    assert step(engine, result.id, "s7").outputs == {"n": "7"}
    assert log_text(engine, result.id, "sum") == ["0-19"]
    assert log_text(engine, result.id, "s3") == ["set n"]
    running = [e for e in engine.store.list_events(result.id) if e.type == "step.running"]
    assert len(running) == 22 and len({e.step_key for e in running}) == 22
