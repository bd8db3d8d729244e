"""A worker told to stop in the middle of brief steps (``step.set`` batches) finishes
the batch it holds, takes nothing new, and loses nothing: every step still runs once,
on the worker that starts next. No reconciler runs here, so the messages the stopping
worker sends are the only way the rest can run.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.workers_kit import Stack, Submitter, runners

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

NO_RECONCILER = {"CONVEYOR_RECONCILE_SECONDS": "3600", "CONVEYOR_STALE_AFTER_SECONDS": "3600"}
WIDTH, DEPTH = 16, 30  # layers of one brief batch each, every step needing one above


def _chain() -> str:
    lines = ["pipelines:\n  p:\n    steps:\n"]
    for layer in range(DEPTH):
        for i in range(WIDTH):
            needs = f", needs: [s{layer - 1}_{i}]" if layer else ""
            lines.append(
                f"      - {{name: s{layer}_{i}, type: step.set{needs}, "
                f"config: {{values: {{v: '{layer}'}}}}}}\n"
            )
    return "".join(lines)


def test_a_worker_stopped_during_brief_batches_takes_nothing_new_and_loses_nothing(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
) -> None:
    # Given a worker running a long chain of brief batches, and no reconciler
    cluster.overrides.update(NO_RECONCILER)
    leaving = cluster.worker("leaving", "sandbox,control")
    cluster.wait_ready(leaving)
    run = submitter.submit(_chain())
    total = WIDTH * DEPTH

    def done() -> int:
        return sum(s.status == "succeeded" for s in pg_store.list_steps(run.id))

    until = time.monotonic() + 60
    while done() < 2 * WIDTH:
        assert time.monotonic() < until, cluster.logs()
        time.sleep(0.01)
    # When it is told to stop in the middle of the chain
    leaving.popen.send_signal(signal.SIGTERM)
    at_signal = done()
    try:
        leaving.popen.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within 60s\n{cluster.logs()}")

    # Then it finished what it held and took nothing new: no step is left running,
    # and at most the batch it held (plus the one it was recording) ended after the signal
    steps = pg_store.list_steps(run.id)
    assert not [s.key for s in steps if s.status == "running"], cluster.logs()
    after = done()
    assert after < total, f"the stopping worker ran the whole chain\n{cluster.logs()}"
    assert after - at_signal <= 2 * WIDTH, (at_signal, after, cluster.logs())

    # And nothing is lost: a worker that starts now runs every other step, each once
    staying = cluster.worker("staying", "sandbox,control")
    cluster.wait_ready(staying)
    finished = submitter.wait(run.id, 120, cluster)
    assert finished.status == "succeeded"
    events = pg_store.list_events(run.id)
    ran = {s.key: runners(events, s.key) for s in pg_store.list_steps(run.id)}
    assert all(len(owners) == 1 for owners in ran.values()), {
        k: v for k, v in ran.items() if len(v) != 1
    }
    assert any(owners == ["staying"] for owners in ran.values())
