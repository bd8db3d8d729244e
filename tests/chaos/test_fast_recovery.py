"""Recovery at small settings: a killed worker's step and a lost retry timer, in seconds.

With the defaults a dead worker costs up to ``lease_seconds`` + ``reconcile_seconds``
(30 + 10 s) and a lost message or retry timer ``stale_after_seconds`` +
``reconcile_seconds``. The knobs are settings; here they are set small (a 1.5 s lease
renewed every 0.3 s, a reconciler pass every 0.5 s, messages sent again after 1 s) and
each loss must heal within a few seconds, with no step run twice by live workers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.clirun import wait_for_file
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.test_workers_routing import pipeline, shell
from tests.integration.workers_kit import (
    Proc,
    Stack,
    Submitter,
    assert_gap_free,
    lines,
    runners,
    wait_until,
)

pytestmark = pytest.mark.postgres

SMALL = {
    "CONVEYOR_LEASE_SECONDS": "1.5",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.3",
    "CONVEYOR_RECONCILE_SECONDS": "0.5",
    "CONVEYOR_STALE_AFTER_SECONDS": "1",
}
LEASE, RECONCILE, STALE = 1.5, 0.5, 1.0
#: What a loaded two-core machine may add (a worker's pool process starting, say).
SLACK = 6.0


def start(cluster: Stack) -> dict[str, Proc]:  # noqa: F811
    cluster.overrides.update(SMALL)
    procs = {name: cluster.worker(name, "sandbox,control") for name in ("one", "two")}
    cluster.wait_ready(*procs.values(), cluster.beat())
    return procs


def test_a_killed_workers_step_runs_again_within_seconds(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    tmp_path: Path,
) -> None:
    # Given two workers with a short lease and a fast reconciler, one running a step
    procs = start(cluster)
    marker = tmp_path / "slow.marker"
    run = submitter.submit(
        pipeline(shell("slow", 'echo $$ >> "$MARKER"; sleep 3', {"MARKER": str(marker)}))
    )
    wait_for_file(marker, within=60)
    first = runners(pg_store.list_events(run.id), "slow")

    # When that worker is killed with SIGKILL
    procs[first[0]].kill()
    killed = time.monotonic()

    # Then the other one runs the step again within the lease and a pass or two
    wait_until(lambda: len(lines(marker)) == 2, LEASE + 2 * RECONCILE + SLACK, "re-run", cluster)
    print(f"re-run {time.monotonic() - killed:.2f}s after the kill")
    assert submitter.wait(run.id, 30, cluster).status == "succeeded"
    events = pg_store.list_events(run.id)
    # And the live worker kept its lease (renewed in time): two attempts, not more
    assert len(runners(events, "slow")) == 2 and len(lines(marker)) == 2
    assert_gap_free(events)


def test_a_retry_whose_timer_died_with_its_worker_runs_within_seconds(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    tmp_path: Path,
) -> None:
    # Given a step that fails once and is retried after 2 s, on two workers
    procs = start(cluster)
    marker = tmp_path / "flaky.marker"
    command = 'echo $$ >> "$MARKER"; [ "$(wc -l < "$MARKER")" -ge 2 ]'
    retry = ", retry: {max_attempts: 3, backoff: 2s}"
    run = submitter.submit(pipeline(shell("flaky", command, {"MARKER": str(marker)}, retry)))

    def retry_queued() -> bool:
        return any(
            e.type == "step.queued" and e.payload.get("next_attempt") == 2
            for e in pg_store.list_events(run.id)
        )

    wait_until(retry_queued, 60, "the first attempt failing", cluster)

    # When the worker holding the retry's timer is killed before it is due
    holder = runners(pg_store.list_events(run.id), "flaky")[0]
    procs[holder].kill()
    killed = time.monotonic()

    # Then the retry runs on the other worker, soon after it was due
    wait_until(lambda: len(lines(marker)) == 2, 2 + STALE + 2 * RECONCILE + SLACK, "retry", cluster)
    print(f"retry ran {time.monotonic() - killed:.2f}s after the kill (due at 2 s)")
    assert submitter.wait(run.id, 30, cluster).status == "succeeded"
    assert runners(pg_store.list_events(run.id), "flaky") == [
        holder,
        ({"one", "two"} - {holder}).pop(),
    ]
