"""Real Celery workers when things break: a worker killed, Redis emptied, Postgres restarted.

Workers run with a 3s lease, a 1s heartbeat and a reconciler (``conveyor beat``) every
second that re-sends work queued for more than 3s, so each loss heals in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import missing
from tests.integration.clirun import wait_for_file
from tests.integration.test_workers_routing import pipeline, shell
from tests.integration.workers_kit import (
    FAST,
    Stack,
    Submitter,
    assert_gap_free,
    flush,
    lines,
    queue_length,
    runners,
    stack,
    wait_until,
)

pytestmark = pytest.mark.postgres

LEASE = float(FAST["CONVEYOR_LEASE_SECONDS"])
RECONCILE = float(FAST["CONVEYOR_RECONCILE_SECONDS"])
STALE = float(FAST["CONVEYOR_STALE_AFTER_SECONDS"])
#: What a loaded two-core machine may add to any of those intervals.
SLACK = 8.0


def test_a_step_of_a_killed_worker_is_run_again_by_another(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, tmp_path: Path
) -> None:
    # Given two workers on the same queues, and beat
    procs = {name: cluster.worker(name, "sandbox,control") for name in ("one", "two")}
    cluster.wait_ready(*procs.values(), cluster.beat())
    marker = tmp_path / "slow.marker"
    run = submitter.submit(
        pipeline(
            shell("slow", 'echo $$ >> "$MARKER"; sleep 4', {"MARKER": str(marker)}),
            shell("after", "true", {}),
        )
    )
    wait_for_file(marker, within=60)
    first = runners(pg_store.list_events(run.id), "slow")
    assert len(first) == 1
    # When the worker running the step is killed with SIGKILL, pool and all
    procs[first[0]].kill()
    killed_at = time.monotonic()
    wait_until(lambda: len(lines(marker)) == 2, LEASE + RECONCILE + SLACK, "re-run", cluster)
    rerun_after = time.monotonic() - killed_at
    # Then the other worker ran it again within the lease and a reconciler pass
    assert submitter.wait(run.id, 60, cluster).status == "succeeded"
    events = pg_store.list_events(run.id)
    assert runners(events, "slow") == [first[0], *({"one", "two"} - {first[0]})]
    assert rerun_after < LEASE + RECONCILE + SLACK
    # And the step ran twice at most, and the event log has no gaps
    assert len(lines(marker)) == 2
    assert_gap_free(events)
    assert any("lost its worker" in str(e.payload.get("reason")) for e in events)


def test_messages_lost_with_redis_are_sent_again_from_postgres(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, tmp_path: Path
) -> None:
    # Given runs whose first steps are queued in Redis, and no worker running
    markers = tmp_path / "markers"
    markers.mkdir()
    mark = 'echo $$ >> "$MARKERS/$CONVEYOR_RUN_ID-$CONVEYOR_STEP"'
    env = {"MARKERS": str(markers)}
    text = pipeline(shell("first", mark, env), shell("second", mark, env))
    runs = [submitter.submit(text) for _ in range(4)]
    assert queue_length(cluster.broker_url, "sandbox") == 4
    # When Redis loses everything, and then the workers and beat start
    flush(cluster.broker_url)
    assert queue_length(cluster.broker_url, "sandbox") == 0
    cluster.wait_ready(
        cluster.worker("one", "sandbox,control", 2),
        cluster.worker("two", "sandbox"),
        cluster.beat(),
    )
    # Then the reconciler sends the steps again from Postgres and every run completes
    for run in runs:
        assert submitter.wait(run.id, STALE + RECONCILE + 60, cluster).status == "succeeded"
        events = pg_store.list_events(run.id)
        assert any(e.type == "step.redispatched" for e in events)
        assert_gap_free(events)
        # And no step ran twice
        for key in ("first", "second"):
            assert len(lines(markers / f"{run.id}-{key}")) == 1
            assert len(runners(events, key)) == 1


def pg_restart_command() -> list[str]:
    """``pg_ctlcluster VERSION main restart`` for this machine's cluster.

    Restarting the machine's Postgres cuts every session on it, other test runs' too:
    it happens under CI (``CI=true``) or when ``CONVEYOR_TEST_PG_RESTART=1`` asks for it.
    """
    under_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not (under_ci or os.environ.get("CONVEYOR_TEST_PG_RESTART") == "1"):
        pytest.skip("restarts this machine's Postgres: CI=true or CONVEYOR_TEST_PG_RESTART=1")
    clusters = (
        sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").is_dir() else []
    )
    if not clusters or shutil.which("pg_ctlcluster") is None:
        missing("pg_ctlcluster", "no Debian Postgres cluster to restart")
    return ["pg_ctlcluster", clusters[-1].parent.name, "main", "restart"]


def test_workers_carry_on_after_a_postgres_restart(
    pg_store: SqlStore, pg_database: str, broker_url: str, tmp_path: Path
) -> None:
    restart = pg_restart_command()
    # Given a worker whose lease outlives a restart (heartbeats fail while it lasts)
    with stack(pg_database, broker_url, tmp_path, CONVEYOR_LEASE_SECONDS="15") as cluster:
        cluster.wait_ready(cluster.worker("steady", "sandbox,control", 2), cluster.beat())
        submitter = Submitter(pg_store, cluster.settings)
        marker = tmp_path / "during.marker"
        mark = {"MARKER": str(marker)}
        run = submitter.submit(
            pipeline(
                shell("before", "true", {}),
                shell("during", 'echo $$ >> "$MARKER"; sleep 5', mark),
                shell("after", "true", {}),
                "      - {name: note, type: step.log, config: {message: done}}\n",
            )
        )
        # And a chain of short steps, recording results and claiming all along
        busy = submitter.submit(pipeline(*(shell(f"s{i}", "sleep 0.1", {}) for i in range(40))))
        wait_for_file(marker, within=60)
        # When Postgres restarts while they run (every connection is cut)
        subprocess.run(restart, check=True, capture_output=True, timeout=120)
        # Then the worker records the steps, claims the next ones and finishes both runs
        try:
            for each in (run, busy):
                assert submitter.wait(each.id, 90, cluster).status == "succeeded"
                assert_gap_free(pg_store.list_events(each.id))
        finally:
            submitter.close()
        assert 1 <= len(lines(marker)) <= 2
