"""``conveyor`` as a user runs it: a real process, a real SQLite (or Postgres) store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import new_pg_database

from .clirun import Cli, Result, gone, wait_for_file


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command, in a fresh working directory with a fresh data directory."""
    return Cli(tmp_path)


# --- the hello example, end to end ----------------------------------------------------


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, Result]:
    """``conveyor run examples/hello.yaml --param who=tests``, once for the module."""
    cli = Cli(tmp_path_factory.mktemp("hello"))
    return cli, cli("run", "examples/hello.yaml", "--param", "who=tests")


def test_hello_succeeds_and_says_so(hello: tuple[Cli, Result]) -> None:
    # Given the hello example, When it runs
    _, result = hello
    # Then it exits 0, names the run first and ends with its status
    assert result.code == 0, result.output
    assert result.stdout.startswith(f"run {result.run_id} of hello: 5 steps")
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"run {result.run_id}  hello  ✓ succeeded")
    for step in ("checkout", "version", "lint", "build", "report"):
        assert re.search(rf"✓ {step} succeeded", result.stdout), result.output
    assert result.stderr == ""


def test_hello_is_recorded_in_the_store(hello: tuple[Cli, Result]) -> None:
    cli, result = hello
    with cli.store() as store:
        run = store.get_run(result.run_id)
        steps = {s.key: s for s in store.list_steps(run.id)}
        events = store.list_events(run.id)
        logs = {key: [line.text for line in store.list_logs(run.id, key)] for key in steps}
    # The run and every step succeeded at the first attempt
    assert run.status == "succeeded" and run.error is None
    assert run.params == {"who": "tests"}
    assert list(steps) == ["checkout", "version", "lint", "build", "report"]
    assert {(s.status, s.attempts) for s in steps.values()} == {("succeeded", 1)}
    # Outputs went through the templates from step to step
    assert steps["checkout"].outputs is not None and steps["checkout"].outputs["files"] == "1"
    assert steps["version"].outputs == {"version": "1.0.0", "who": "tests"}
    assert steps["build"].outputs is not None
    assert steps["build"].outputs["artifact"] == "dist/app-1.0.0.tar"
    assert steps["report"].outputs == {"message": "built dist/app-1.0.0.tar for tests"}
    # The event log is gap-free from 1, starts with run.created and ends with run.succeeded
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert run.event_seq == len(events)
    assert events[0].type == "run.created" and events[-1].type == "run.succeeded"
    # `needs` held: build started only after checkout and version succeeded
    seq = {(e.type, e.step_key): e.seq for e in events}
    assert seq[("step.running", "build")] > seq[("step.succeeded", "checkout")]
    assert seq[("step.running", "build")] > seq[("step.succeeded", "version")]
    assert seq[("step.running", "report")] > seq[("step.succeeded", "lint")]
    # The step logs hold what the commands printed
    assert "Hello, tests! building 1.0.0 from 1 file(s)" in logs["build"]
    assert "lint ok" in logs["lint"]
    assert logs["report"] == ["built dist/app-1.0.0.tar for tests"]
    # And the run's workspace is gone once the run is over
    assert not (cli.data_dir / "workspaces" / run.id).exists()


def test_runs_lists_the_run(hello: tuple[Cli, Result]) -> None:
    cli, result = hello
    listed = cli("runs")
    assert listed.code == 0, listed.output
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["RUN", "PIPELINE", "STATUS", "STARTED", "DURATION"]
    assert row.split()[:4] == [result.run_id, "hello", "✓", "succeeded"]
    # Filters: a status no run has lists nothing
    assert result.run_id not in cli("runs", "--status", "failed").stdout


def test_show_prints_steps_outputs_and_events(hello: tuple[Cli, Result]) -> None:
    cli, result = hello
    # A unique prefix of the id is enough
    shown = cli("show", result.run_id[:8])
    assert shown.code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"run {result.run_id}  hello  ✓ succeeded")
    assert 'params: {"who": "tests"}' in lines
    assert re.search(r"^ build +✓ succeeded +1 .*dist/app-1\.0\.0\.tar", shown.stdout, re.M)
    assert "built dist/app-1.0.0.tar for tests" in shown.stdout
    assert re.search(r"^ +1 \S+ \S+ run\.created", shown.stdout, re.M)
    assert lines[-1].split()[3] == "run.succeeded"


def test_show_json_is_the_whole_run(hello: tuple[Cli, Result]) -> None:
    cli, result = hello
    shown = cli("show", result.run_id, "--json")
    assert shown.code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["id"] == result.run_id and data["status"] == "succeeded"
    assert data["pipeline"] == "hello" and data["params"] == {"who": "tests"}
    steps = {s["key"]: s for s in data["steps"]}
    assert steps["build"]["outputs"]["artifact"] == "dist/app-1.0.0.tar"
    assert steps["build"]["attempts"] == 1 and steps["build"]["duration"] >= 0
    assert [e["seq"] for e in data["events"]] == list(range(1, len(data["events"]) + 1))
    assert data["events"][-1]["type"] == "run.succeeded"
    # Timestamps are ISO 8601, as any JSON consumer expects
    assert datetime.fromisoformat(data["completed_at"]) >= datetime.fromisoformat(
        data["created_at"]
    )


def test_logs_prints_a_steps_lines(hello: tuple[Cli, Result]) -> None:
    cli, result = hello
    shown = cli("logs", result.run_id, "build")
    assert shown.code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert "Hello, tests! building 1.0.0 from 1 file(s)" in lines
    assert lines[0].startswith("$ echo ")  # each command is shown before its output
    # Without a step: every line, prefixed with its step
    everything = cli("logs", result.run_id).stdout.splitlines()
    assert "[report] built dist/app-1.0.0.tar for tests" in everything
    assert "[lint] lint ok" in everything
    # A step the run does not have is an error naming the ones it has
    missing = cli("logs", result.run_id, "biuld")
    assert missing.code == 1
    assert "has no step 'biuld' (steps: checkout, version, lint, build, report)" in missing.stderr


# --- the other examples -----------------------------------------------------------------


def test_retry_example_passes_on_the_third_attempt(cli: Cli) -> None:
    result = cli("run", "examples/retry.yaml")
    assert result.code == 0, result.output
    assert "↻ flaky-test failed, retrying in 1.0s" in result.stdout
    assert "↻ flaky-test failed, retrying in 2.0s" in result.stdout
    with cli.store() as store:
        steps = {s.key: s for s in store.list_steps(result.run_id)}
        first = [line.text for line in store.list_logs(result.run_id, "flaky-test", attempt=1)]
        third = [line.text for line in store.list_logs(result.run_id, "flaky-test", attempt=3)]
    assert steps["flaky-test"].status == "succeeded" and steps["flaky-test"].attempts == 3
    assert steps["notify-failure"].status == "skipped"
    assert "connection reset, try again" in first
    assert "passed on attempt 3" in third
    # `logs` shows where each attempt starts
    logs = cli("logs", result.run_id, "flaky-test").stdout.splitlines()
    assert [line for line in logs if line.startswith("--- attempt")] == [
        "--- attempt 1 ---",
        "--- attempt 2 ---",
        "--- attempt 3 ---",
    ]


def test_matrix_example_expands_and_joins(cli: Cli) -> None:
    result = cli("run", "examples/matrix.yaml")
    assert result.code == 0, result.output
    with cli.store() as store:
        steps = {s.key: s for s in store.list_steps(result.run_id)}
    tests = {k: s for k, s in steps.items() if k.startswith("test[")}
    assert sorted(tests) == sorted(
        f"test[python={p},db={d}]"
        for p, d in [
            ("3.10", "sqlite"),
            ("3.11", "sqlite"),
            ("3.11", "postgres"),
            ("3.12", "sqlite"),
            ("3.12", "postgres"),
        ]
    )
    assert all(s.status == "succeeded" for s in steps.values())
    assert steps["summary"].outputs == {"message": "ok-3.12-postgres"}
    assert "✓ test[python=3.12,db=postgres] succeeded" in result.stdout


# --- failure -----------------------------------------------------------------------------

FAILING = """\
pipelines:
  broken:
    steps:
      - name: setup
        type: step.shell_exec
        config:
          commands: ["echo preparing"]
      - name: compile
        type: step.shell_exec
        config:
          commands:
            - echo "compiling module a"
            - echo "undefined symbol foo" >&2; exit 3
      - name: package
        type: step.log
        config: {message: never}
      - name: publish
        type: step.log
        config: {message: never}
"""


def test_a_failing_pipeline_says_which_step_failed_and_why(cli: Cli) -> None:
    cli.write("broken.yaml", FAILING)
    result = cli("run", "broken.yaml")
    assert result.code == 1, result.output
    assert "Traceback" not in result.stderr
    err = result.stderr.splitlines()
    # Why, on one line
    assert err[0] == (
        "✗ step 'compile' failed: command 2 of 2 exited with 3: "
        'echo "undefined symbol foo" >&2; exit 3'
    )
    # The last lines of the failed step's log, stderr included
    assert err[1] == "--- last lines of compile (attempt 1, failed) ---"
    assert "compiling module a" in err and "undefined symbol foo" in err
    assert "✗ compile failed" in result.stdout
    assert "⊘ package cancelled: not run: step 'compile' failed" in result.stdout
    assert "⊘ publish cancelled: not run: step 'compile' failed" in result.stdout
    assert result.stdout.strip().splitlines()[-1].split()[2:5] == ["broken", "✗", "failed"]
    with cli.store() as store:
        run = store.get_run(result.run_id)
        steps = {s.key: s for s in store.list_steps(run.id)}
    assert run.status == "failed"
    assert steps["setup"].status == "succeeded"
    assert steps["compile"].status == "failed" and steps["compile"].exit_code == 3
    assert steps["package"].status == steps["publish"].status == "cancelled"


def test_step_keys_and_messages_are_printed_as_written(cli: Cli) -> None:
    # Given matrix keys with brackets and an error with what looks like terminal markup
    cli.write(
        "markup.yaml",
        """\
pipelines:
  markup:
    steps:
      - name: test
        type: step.shell_exec
        matrix: {n: [1]}
        config:
          commands: ['echo "[/] [bold]loud"; exit 2']
""",
    )
    result = cli("run", "markup.yaml")
    # Then nothing is swallowed or crashes: the text comes out as it is
    assert result.code == 1, result.output
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "✗ step 'test[n=1]' failed: command 1 of 1 exited with 2" in result.stderr
    assert "[/] [bold]loud" in result.stderr.splitlines()
    shown = cli("show", result.run_id)
    assert re.search(r"^ test\[n=1\] +✗ failed", shown.stdout, re.M), shown.output
    assert "step 'test[n=1]' failed" in shown.stdout


# --- secrets -----------------------------------------------------------------------------

SECRET = "s3cr3t-value"
SECRET_FROM_ENV = "from-env-value"
SECRETS = """\
pipelines:
  secret:
    steps:
      - name: use
        type: step.shell_exec
        config:
          env:
            TOKEN_ENV: "{{ .secrets.TOKEN }}"
            OTHER_ENV: "{{ .secrets.OTHER }}"
          commands:
            - echo "token is {{ .secrets.TOKEN }}"
            - echo "env token is $TOKEN_ENV and other is $OTHER_ENV"
            - echo "shouted=$(echo "$TOKEN_ENV" | tr a-z A-Z)" >> "$CONVEYOR_OUTPUT"
            - echo "leak=$TOKEN_ENV" >> "$CONVEYOR_OUTPUT"
      - name: say
        type: step.log
        config:
          message: "log sees {{ .secrets.TOKEN }} and {{ .steps.use.leak }}"
      - name: keep
        type: step.set
        config:
          values: {copied: "{{ .secrets.OTHER }}"}
      - name: condition
        type: step.log
        on_error: continue
        if: "{{ index .steps .secrets.OTHER }}"
        config: {message: never}
      - name: boom
        type: step.log
        needs: [condition]              # after it: a failure here would cancel it otherwise
        config:
          message: "{{ index .steps .secrets.TOKEN }}"
"""


def test_secrets_are_masked_everywhere(cli: Cli) -> None:
    # Given a pipeline that prints, exports, logs, stores and fails on its secrets
    cli.write("secret.yaml", SECRETS)
    result = cli(
        "run",
        "secret.yaml",
        "--secret",
        f"TOKEN={SECRET}",
        "--secret-env",
        "OTHER",
        OTHER=SECRET_FROM_ENV,
    )
    assert result.code == 1, result.output  # `boom` fails, quoting the secret
    # Then the values are nowhere: not on the terminal...
    shown = cli("show", result.run_id, "--json")
    logs = cli("logs", result.run_id)
    for text in (result.stdout, result.stderr, shown.stdout, logs.stdout):
        assert SECRET not in text and SECRET_FROM_ENV not in text
    # ...and not in any row of any table of the store
    dump = cli.dump()
    assert SECRET not in dump and SECRET_FROM_ENV not in dump
    # Only *** stands where they were: logs, outputs, errors and events
    with cli.store() as store:
        steps = {s.key: s for s in store.list_steps(result.run_id)}
        use = [line.text for line in store.list_logs(result.run_id, "use")]
        events = store.list_events(result.run_id)
    assert "token is ***" in use
    assert "env token is *** and other is ***" in use
    assert steps["use"].outputs is not None and steps["use"].outputs["leak"] == "***"
    # (the commands did get the real value: only its exact spelling is masked)
    assert steps["use"].outputs["shouted"] == SECRET.upper()
    assert steps["say"].outputs == {"message": "log sees *** and ***"}
    assert steps["keep"].outputs == {"copied": "***"}
    assert steps["condition"].status == "failed"
    assert "'steps' has no key '***'" in (steps["condition"].last_error or "")
    assert steps["boom"].status == "failed"
    assert "'steps' has no key '***'" in (steps["boom"].last_error or "")
    assert any("***" in json.dumps(e.payload) for e in events if e.type == "step.failed")
    assert "✗ step 'boom' failed: config.message: 'steps' has no key '***'" in result.stderr


def test_a_missing_secret_env_variable_is_a_usage_error(cli: Cli) -> None:
    result = cli("run", "examples/hello.yaml", "--secret-env", "NOT_SET_ANYWHERE")
    assert result.code == 2
    assert "environment variable NOT_SET_ANYWHERE is not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli.count_rows("workflow_instances") == 0


# --- timeouts ----------------------------------------------------------------------------


def _sleeper(marker: Path, *, step_timeout: str = "", run_timeout: str = "") -> str:
    """A pipeline whose first step writes its shell's pid to ``marker`` and sleeps."""
    pipeline_timeout = f"    timeout: {run_timeout}\n" if run_timeout else ""
    step = f"        timeout: {step_timeout}\n" if step_timeout else ""
    return f"""\
pipelines:
  sleepy:
{pipeline_timeout}    steps:
      - name: nap
        type: step.shell_exec
{step}        config:
          commands:
            - echo "going to sleep"
            - echo $$ > "{marker}"; exec sleep 30
      - name: wake
        type: step.log
        config: {{message: never}}
"""


def test_a_step_timeout_fails_the_run_quickly(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "nap.pid"
    cli.write("sleepy.yaml", _sleeper(marker, step_timeout="1s"))
    started = time.monotonic()
    result = cli("run", "sleepy.yaml")
    assert time.monotonic() - started < 10
    assert result.code == 1, result.output
    assert "✗ step 'nap' failed: timed out" in result.stderr
    assert "going to sleep" in result.stderr  # the tail of the step's log
    assert gone(int(marker.read_text()))
    with cli.store() as store:
        run = store.get_run(result.run_id)
        steps = {s.key: s for s in store.list_steps(run.id)}
    assert run.status == "failed" and "timed out" in (run.error or "")
    assert steps["nap"].status == "failed" and "timed out" in (steps["nap"].last_error or "")
    assert steps["wake"].status == "cancelled"


def test_a_run_timeout_fails_the_run_quickly(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "nap.pid"
    cli.write("sleepy.yaml", _sleeper(marker, run_timeout="1s"))
    started = time.monotonic()
    result = cli("run", "sleepy.yaml")
    assert time.monotonic() - started < 10
    assert result.code == 1, result.output
    assert "✗ run timed out after 1.0s" in result.stderr
    assert gone(int(marker.read_text()))
    with cli.store() as store:
        run = store.get_run(result.run_id)
        steps = {s.key: s for s in store.list_steps(run.id)}
    assert run.status == "failed" and run.error == "run timed out after 1.0s"
    assert steps["nap"].status in ("failed", "cancelled")
    assert "timed out" in (steps["nap"].last_error or "")
    assert steps["wake"].status == "cancelled"


# --- stopping a run ------------------------------------------------------------------------


def _start_sleeper(cli: Cli, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    marker = tmp_path / "nap.pid"
    cli.write("sleepy.yaml", _sleeper(marker))
    proc = cli.start("run", "sleepy.yaml")
    try:
        pid = int(wait_for_file(marker))
    except AssertionError:
        proc.kill()
        raise
    return proc, pid


def test_cancel_from_another_process_stops_the_run(cli: Cli, tmp_path: Path) -> None:
    # Given `conveyor run` busy in a long step
    proc, pid = _start_sleeper(cli, tmp_path)
    try:
        listed = cli("runs", "--status", "running")
        run_id = listed.stdout.splitlines()[1].split()[0]
        # When another process cancels the run
        cancelled = cli("cancel", run_id[:8])
        assert cancelled.code == 0, cancelled.output
        assert cancelled.stdout.strip() == f"run {run_id} cancelled"
        stopped = time.monotonic()
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    # Then `conveyor run` ends soon, non-zero, saying so, and its step's process is gone
    assert time.monotonic() - stopped < 5
    assert proc.returncode == 1, stdout + stderr
    assert "✗ cancelled by user" in stderr
    assert "Traceback" not in stderr
    assert gone(pid)
    with cli.store() as store:
        run = store.get_run(run_id)
        steps = {s.key: s.status for s in store.list_steps(run_id)}
    assert run.status == "cancelled"
    assert steps == {"nap": "cancelled", "wake": "cancelled"}
    # Cancelling it again is an error that says why
    again = cli("cancel", run_id)
    assert again.code == 1 and "is already cancelled" in again.stderr


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_to_conveyor_run_cancels_the_run(
    cli: Cli, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    proc, pid = _start_sleeper(cli, tmp_path)
    try:
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == code, stdout + stderr
    assert f"{signum.name}: cancelling the run" in stderr
    assert "Traceback" not in stderr
    assert gone(pid)
    run_id = Result(0, stdout, stderr).run_id
    with cli.store() as store:
        run = store.get_run(run_id)
    assert run.status == "cancelled"
    assert run.error == f"cancelled: interrupted by {signum.name}"


def test_a_closed_stdout_does_not_abandon_the_run(cli: Cli) -> None:
    # Given `conveyor run … | head -1`: the reader of stdout is gone before it prints
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor", "run", "examples/hello.yaml"],
            cwd=cli.workdir,
            env=cli.env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write)
    # Then the run still goes to its end, and the exit code says how it ended
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with cli.store() as store:
        (run,) = store.list_runs()
    assert run.status == "succeeded"


# --- validate and step-types ---------------------------------------------------------------

INVALID = """\
pipelines:
  ci:
    steps:
      - name: build
        type: step.shell_exec
        config:
          commandz: [make]
      - name: test
        type: step.nope
      - name: deploy
        type: step.log
        needs: [tset]
        config: {message: "{{ .steps.build.x }"}
"""


def test_validate_accepts_a_good_file(cli: Cli) -> None:
    result = cli("validate", "examples/hello.yaml")
    assert result.code == 0, result.output
    assert result.stdout.strip() == "✓ pipeline hello: 5 steps"
    # and writes nothing
    assert not cli.database.exists()


def test_validate_lists_every_problem_with_its_line(cli: Cli) -> None:
    cli.write("invalid.yaml", INVALID)
    result = cli("validate", "invalid.yaml")
    assert result.code == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "invalid pipeline: 5 problem(s)"
    problems = [line.strip() for line in lines[1:]]
    assert all(re.fullmatch(r"\S+: .+ \(line \d+\)", p) for p in problems), problems
    expected = [
        "pipelines.ci.steps[0].config.commands: field required (line 6)",
        "pipelines.ci.steps[0].config.commandz: unknown key (line 7)",
        "pipelines.ci.steps[1].type: unknown step type 'step.nope'",
        "pipelines.ci.steps[2].config.message: template error:",
        "pipelines.ci.steps[2].needs[0]: unknown step 'tset'",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert any(p.startswith("pipelines.ci.steps[1].type:") and "(line 9)" in p for p in problems)
    assert any(p.startswith("pipelines.ci.steps[2].needs") and "(line 12)" in p for p in problems)
    assert not cli.database.exists()


def test_step_types_lists_the_builtin_types_with_schemas(cli: Cli) -> None:
    listed = cli("step-types")
    assert listed.code == 0, listed.output
    for name in ("step.log", "step.set", "step.shell_exec"):
        assert re.search(rf"^{re.escape(name)}  queue=\w+", listed.stdout, re.M), listed.stdout
    assert '"commands"' in listed.stdout
    schemas = json.loads(cli("step-types", "--json").stdout)
    assert {"step.log", "step.set", "step.shell_exec"} <= set(schemas)
    shell = schemas["step.shell_exec"]
    assert shell["type"] == "object" and "commands" in shell["required"]
    assert shell["properties"]["commands"]["type"] == "array"
    assert schemas["step.log"]["required"] == ["message"]
    one = json.loads(cli("step-types", "step.set", "--json").stdout)
    assert list(one) == ["step.set"]
    unknown = cli("step-types", "step.nope")
    assert unknown.code == 1 and "no step type 'step.nope'" in unknown.stderr


# --- Postgres ----------------------------------------------------------------------------


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """An empty database beside the session's, never migrated; dropped afterwards."""
    with new_pg_database("conveyor_cli") as url:
        yield url


@pytest.mark.postgres
def test_run_on_postgres_after_db_upgrade(cli: Cli, fresh_pg: str) -> None:
    # A database of its own: the run it leaves behind is no other test's business.
    pg_database = fresh_pg
    upgraded = cli("--database-url", pg_database, "db", "upgrade")
    assert upgraded.code == 0, upgraded.output
    assert upgraded.stdout.strip() == "database schema is current"
    result = cli("--database-url", pg_database, "run", "examples/hello.yaml")
    assert result.code == 0, result.output
    store = SqlStore(pg_database)
    try:
        run = store.get_run(result.run_id)
        steps = store.list_steps(run.id)
        events = store.list_events(run.id)
    finally:
        store.close()
    assert run.status == "succeeded"
    assert {s.status for s in steps} == {"succeeded"}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Nothing went to the embedded SQLite file
    assert not cli.database.exists()


@pytest.mark.postgres
def test_run_on_an_unmigrated_postgres_says_to_upgrade(cli: Cli, fresh_pg: str) -> None:
    result = cli("run", "examples/hello.yaml", CONVEYOR_DATABASE_URL=fresh_pg)
    assert result.code == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "run `conveyor db upgrade`" in lines[0]
    # And once upgraded, the same command works
    assert cli("--database-url", fresh_pg, "db", "upgrade").code == 0
    again = cli("run", "examples/hello.yaml", CONVEYOR_DATABASE_URL=fresh_pg)
    assert again.code == 0, again.output
