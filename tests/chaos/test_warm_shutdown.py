"""A worker told to stop (SIGTERM: Celery's warm shutdown) takes nothing new.

It finishes the step it runs and records it; the next step of the chain, which it
would otherwise have claimed with the result and run itself, goes out as a message
and runs on a worker that stays. No reconciler runs here, so that message is the only
way the step can run.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.clirun import wait_for_file
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.test_workers_routing import pipeline, shell
from tests.integration.workers_kit import Stack, Submitter, runners

pytestmark = pytest.mark.postgres

NO_RECONCILER = {"CONVEYOR_RECONCILE_SECONDS": "3600", "CONVEYOR_STALE_AFTER_SECONDS": "3600"}


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_worker_in_warm_shutdown_finishes_its_step_and_takes_not_the_next(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    tmp_path: Path,
    concurrency: int,
) -> None:
    # Given a worker running the first step of a chain, and no reconciler
    cluster.overrides.update(NO_RECONCILER)
    leaving = cluster.worker("leaving", "sandbox,control", concurrency)
    cluster.wait_ready(leaving)
    marker = tmp_path / "first.marker"
    run = submitter.submit(
        pipeline(
            shell("first", 'echo started > "$MARKER"; sleep 3', {"MARKER": str(marker)}),
            shell("second", "echo second", {}, ", needs: [first]"),
            "      - {name: third, type: step.set, needs: [second], config: {values: {a: b}}}\n",
        )
    )
    wait_for_file(marker, within=60)

    # When it is told to stop (SIGTERM to the worker, as an orchestrator does)
    leaving.popen.send_signal(signal.SIGTERM)
    try:
        leaving.popen.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within 60s\n{cluster.logs()}")

    # Then it finished its step, and left the next one queued, untouched
    steps = {s.key: s for s in pg_store.list_steps(run.id)}
    assert steps["first"].status == "succeeded", cluster.logs()
    assert (steps["second"].status.value, steps["second"].attempts) == ("queued", 1), (
        f"the stopping worker took the next step\n{cluster.logs()}"
    )
    assert steps["third"].status == "pending"

    # And that step has its message: a worker that starts now runs the rest
    staying = cluster.worker("staying", "sandbox,control")
    cluster.wait_ready(staying)
    done = submitter.wait(run.id, 60, cluster)
    assert done.status == "succeeded"
    events = pg_store.list_events(run.id)
    assert runners(events, "first") == ["leaving"]
    assert runners(events, "second") == ["staying"]
