"""Bursts of brief-step runs on real Celery workers finish on their messages alone.

Brief steps (``step.set``) are coalesced: a run's brief steps that become ready
together get one message per batch, and whoever claims one takes the batch. Here no
reconciler runs at all (no ``conveyor beat``, and its intervals are an hour), so a
step left without a message would stay queued until the test gives up: every run
finishing proves that no wake-up was lost on the way.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.workers_kit import Stack, Submitter

pytestmark = pytest.mark.postgres

#: A reconciler that cannot help within the test's time.
NO_RECONCILER = {"CONVEYOR_RECONCILE_SECONDS": "3600", "CONVEYOR_STALE_AFTER_SECONDS": "3600"}
STEPS = 100
RUNS = 20
#: Generous for a loaded two-core machine: an idle stack does one such run in ~0.2 s.
BOUND = 120.0


def fan_out(steps: int) -> str:
    """``steps`` independent ``step.set`` steps: all ready at once."""
    body = "".join(
        f"      - {{name: s{i}, type: step.set, needs: [], config: {{values: {{i: '{i}'}}}}}}\n"
        for i in range(steps)
    )
    return f"version: 1\npipelines:\n  burst:\n    steps:\n{body}"


def chains(steps: int, width: int) -> str:
    """``width`` chains of ``step.set`` steps, side by side: each step needs the one
    ``width`` places before it, so every result makes the next of its chain ready."""
    lines = []
    for i in range(steps):
        needs = f"s{i - width}" if i >= width else ""
        lines.append(
            f"      - {{name: s{i}, type: step.set, needs: [{needs}], "
            f"config: {{values: {{i: '{i}'}}}}}}\n"
        )
    return f"version: 1\npipelines:\n  burst:\n    steps:\n{''.join(lines)}"


@pytest.mark.parametrize("shape", ["fan-out", "chains"])
def test_a_burst_of_brief_step_runs_finishes_without_the_reconciler(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    shape: str,
) -> None:
    # Given three workers competing for the control queue, and no reconciler at all
    cluster.overrides.update(NO_RECONCILER)
    workers = [cluster.worker(f"w{i}", "control", 2) for i in range(3)]
    cluster.wait_ready(*workers)
    text = fan_out(STEPS) if shape == "fan-out" else chains(STEPS, 10)

    # When runs of a 100-step pipeline are submitted back to back
    ids = [submitter.submit(text).id for _ in range(RUNS)]

    # Then every step of every run runs on its messages: each run succeeds
    until = time.monotonic() + BOUND
    pending = set(ids)
    while pending and time.monotonic() < until:
        pending = {i for i in pending if not pg_store.get_run(i).status.terminal}
        time.sleep(0.2)
    stuck = {
        run_id[:8]: dict(Counter(s.status.value for s in pg_store.list_steps(run_id)))
        for run_id in pending
    }
    assert not stuck, f"runs left with steps nobody was told about: {stuck}\n{cluster.logs()}"
    assert {pg_store.get_run(i).status.value for i in ids} == {"succeeded"}
