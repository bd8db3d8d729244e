"""Real Celery workers per queue: routing, duplicates, cancel and waiting steps.

Each test starts ``conveyor worker`` processes against the session's Postgres database
and a Redis database of its own, and submits runs from the test process through
``Runtime.submit`` with a ``CeleryDispatcher``, as the API does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from conveyor.workers.queues import RUN_STEP_TASK
from tests.integration.clirun import alive, gone, wait_for_file
from tests.integration.workers_kit import (
    Stack,
    Submitter,
    lines,
    runners,
    wait_until,
)

pytestmark = pytest.mark.postgres

ROUTED = """
pipelines:
  routed:
    steps:
      - {name: build, type: step.shell_exec, config: {commands: ['true']}}
      - {name: scan, type: step.shell_exec, queue: scan, config: {commands: ['true']}}
      - {name: note, type: step.log, config: {message: scanned}}
      - {name: package, type: step.shell_exec, config: {commands: ['true']}}
"""


def shell(name: str, command: str, env: dict[str, str], extra: str = "") -> str:
    """One step.shell_exec line of a pipeline, with ``env`` for its command."""
    pairs = ", ".join(f"{k}: '{v}'" for k, v in env.items())
    quoted = command.replace("'", "''")
    return (
        f"      - {{name: {name}, type: step.shell_exec{extra}, "
        f"config: {{commands: ['{quoted}'], env: {{{pairs}}}}}}}\n"
    )


def pipeline(*steps: str) -> str:
    """A pipeline named ``p`` of the given step lines."""
    return "pipelines:\n  p:\n    steps:\n" + "".join(steps)


def test_steps_run_only_on_workers_that_consume_their_queue(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore
) -> None:
    # Given a worker on `scan` only and one on `sandbox` and `control`
    scanner = cluster.worker("scanner", "scan")
    builder = cluster.worker("builder", "sandbox,control")
    cluster.wait_ready(scanner, builder)
    # When runs go build (sandbox) -> scan (scan) -> note (control) -> package (sandbox)
    runs = [submitter.submit(ROUTED) for _ in range(3)]
    # Then every step ran on a worker of its queue: the scanner ran scans and nothing
    # else, and did not carry on with the steps its scan made ready
    for run in runs:
        assert submitter.wait(run.id, 60, cluster).status == "succeeded"
        events = pg_store.list_events(run.id)
        assert runners(events, "scan") == ["scanner"]
        for key in ("build", "note", "package"):
            assert runners(events, key) == ["builder"], cluster.logs()


def test_brief_steps_ride_one_message_and_the_rest_keep_theirs(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore
) -> None:
    # Given two workers on the same queues
    one = cluster.worker("one", "sandbox,control")
    two = cluster.worker("two", "sandbox,control")
    cluster.wait_ready(one, two)
    sets = [
        f"      - {{name: s{i}, type: step.set, needs: [], config: {{values: {{n: '{i}'}}}}}}\n"
        for i in range(12)
    ]
    shells = [shell(f"sh{i}", "sleep 0.3", {}, ", needs: []") for i in range(2)]
    # When a run makes twelve step.set steps and two commands ready at once
    run = submitter.submit(pipeline(*sets, *shells))
    # Then one worker took every step.set with the one message they shared, each ran
    # once, and the two commands, with a message each, ran one on each worker
    assert submitter.wait(run.id, 60, cluster).status == "succeeded"
    events = pg_store.list_events(run.id)
    owners = {name for i in range(12) for name in runners(events, f"s{i}")}
    assert len(owners) == 1 and all(len(runners(events, f"s{i}")) == 1 for i in range(12))
    assert sorted(runners(events, "sh0") + runners(events, "sh1")) == ["one", "two"]
    steps = {s.key: s for s in pg_store.list_steps(run.id)}
    assert steps["s11"].outputs == {"n": "11"}


def test_a_duplicated_message_runs_the_step_once(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, tmp_path: Path
) -> None:
    # Given a worker with two slots, so a duplicate can arrive while the step runs
    twin = cluster.worker("twin", "sandbox,control", 2)
    cluster.wait_ready(twin)
    marker = tmp_path / "once.marker"
    run = submitter.submit(
        pipeline(shell("once", 'echo $$ >> "$MARKER"; sleep 1', {"MARKER": str(marker)}))
    )
    # When the same message is sent twice more, and one for an attempt that never was
    for attempt in (1, 1, 2):
        submitter.app.send_task(RUN_STEP_TASK, args=(run.id, "once", attempt), queue="sandbox")
    # Then every message was delivered, and the step ran once
    assert submitter.wait(run.id, 60, cluster).status == "succeeded"
    wait_until(lambda: twin.text().count("] succeeded in") >= 4, 30, "4 deliveries", cluster)
    assert len(lines(marker)) == 1
    assert runners(pg_store.list_events(run.id), "once") == ["twin"]
    assert pg_store.list_steps(run.id)[0].attempts == 1


def test_cancel_kills_the_running_sandbox_and_cancels_the_rest(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, tmp_path: Path
) -> None:
    # Given a run whose first step is a long sleep in the sandbox, with two after it
    runner = cluster.worker("runner", "sandbox,control")
    cluster.wait_ready(runner)
    pidfile = tmp_path / "sleep.pid"
    run = submitter.submit(
        pipeline(
            shell("long", 'sleep 300 & echo $! > "$PIDFILE"; wait', {"PIDFILE": str(pidfile)}),
            shell("next", "true", {}),
            "      - {name: last, type: step.log, config: {message: never}}\n",
        )
    )
    pid = int(wait_for_file(pidfile, within=60))
    assert alive(pid)
    # When the run is cancelled (from this process, as the API would)
    submitter.runtime.cancel(run.id)
    # Then the worker kills the sandbox process within a heartbeat or so
    assert gone(pid, within=20), cluster.logs()

    def all_cancelled() -> bool:
        return all(s.status == "cancelled" for s in pg_store.list_steps(run.id))

    # And every step ends cancelled: the running one too, once its process is gone
    wait_until(all_cancelled, 20, "every step cancelled", cluster)
    assert pg_store.get_run(run.id).status == "cancelled"


def test_a_step_waiting_for_its_retry_holds_no_worker_slot(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, tmp_path: Path
) -> None:
    # Given one worker with a single slot (and no beat: no reconciler helps here)
    single = cluster.worker("single", "sandbox,control", 1)
    cluster.wait_ready(single)
    flag = tmp_path / "flaky.flag"
    flaky = 'if [ -e "$FLAG" ]; then exit 0; fi; touch "$FLAG"; exit 1'
    retry = ", retry: {max_attempts: 2, backoff: 5s}"
    waiting = submitter.submit(pipeline(shell("flaky", flaky, {"FLAG": str(flag)}, retry)))

    def queued_for_retry() -> bool:
        step = pg_store.list_steps(waiting.id)[0]
        return step.status == "queued" and step.attempts == 2

    # When its step fails once and waits 5s for its retry
    wait_until(queued_for_retry, 60, "the first attempt failed", cluster)
    due = pg_store.list_steps(waiting.id)[0].available_at
    assert due is not None
    # Then another run's step runs on that one slot meanwhile
    other = submitter.submit(pipeline(shell("quick", "true", {})))
    done = submitter.wait(other.id, 60, cluster)
    assert done.status == "succeeded"
    assert done.completed_at is not None and done.completed_at < due
    # And the retry runs when it is due, sent by the worker that scheduled it
    assert submitter.wait(waiting.id, 60, cluster).status == "succeeded"
    retried = [
        e.created_at
        for e in pg_store.list_events(waiting.id)
        if e.type == "step.running" and e.payload["attempt"] == 2
    ]
    assert len(retried) == 1
    assert 0 <= (retried[0] - due).total_seconds() < 3, cluster.logs()
