"""A real ``conveyor worker`` killed with SIGKILL takes its step's processes with it.

The step's shell runs in a session of its own, and it starts one more process with
``setsid``: neither is in the worker's process group, so the kill does not reach them.
They must still be gone within seconds, before the step's re-run on the other worker
starts, so that two copies of the step never run at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.chaos.process_kit import alive, detached, reap, wait_gone
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.workers_kit import FAST, Stack, Submitter, lines, runners, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

LEASE = float(FAST["CONVEYOR_LEASE_SECONDS"])


def test_the_processes_of_a_step_die_with_its_killed_worker(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    tmp_path: Path,
) -> None:
    # Given two workers and beat, and a long step that also starts a detached process
    procs = {name: cluster.worker(name, "sandbox,control") for name in ("one", "two")}
    cluster.wait_ready(*procs.values(), cluster.beat())
    shells, detached_pids = tmp_path / "shells", tmp_path / "detached"
    command = f"echo $$ >> {shells}; {detached(detached_pids)} sleep 1000"
    text = (
        "pipelines:\n  p:\n    steps:\n      - name: long\n        type: step.shell_exec\n"
        f"        config: {{commands: [{json.dumps(command)}]}}\n"
    )
    run = submitter.submit(text)
    wait_until(lambda: lines(shells) and lines(detached_pids), 60, "the step started", cluster)
    first = [int(lines(shells)[0]), int(lines(detached_pids)[0])]
    worker = runners(pg_store.list_events(run.id), "long")[0]
    try:
        assert all(alive(pid) for pid in first)
        # When the worker running it is killed with SIGKILL, pool and all
        procs[worker].kill()
        # Then the step's processes are gone within seconds (before its lease ran out)
        for pid in first:
            assert wait_gone(pid, within=LEASE + 2), f"process {pid} outlived its worker"
        # And once the other worker runs it again, only that copy runs
        wait_until(lambda: len(lines(shells)) == 2, 60, "the re-run", cluster)
        assert not any(alive(pid) for pid in first)
        assert runners(pg_store.list_events(run.id), "long") == [
            worker,
            *({"one", "two"} - {worker}),
        ]
    finally:
        reap(*first, *(int(x) for x in lines(shells) + lines(detached_pids)))
