"""A run whose `if:` loops without end does not wedge anything else (real workers).

The condition is evaluated by the worker that finished the step it needs. It used to
be evaluated inside that step's result transaction, holding the run's row lock for as
long as the template ran (forever): the run's other steps, and soon every worker slot,
waited on that lock. Now conditions are evaluated outside any transaction and within
the template budget (here a generous 40 s, so that the test can watch the rest of the
world go on while it runs).
"""

from __future__ import annotations

import pytest

from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.workers_kit import Stack, Submitter, wait_until

pytestmark = pytest.mark.postgres

RUNAWAY = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}true"
LIMITS = {
    "CONVEYOR_TEMPLATE_MAX_SECONDS": "40",
    "CONVEYOR_TEMPLATE_MAX_OPERATIONS": "1000000000000",
}
#: Generous bounds for a loaded two-core machine.
BOUND = 120.0

RUNAWAY_PIPELINE = f"""
version: 1
pipelines:
  runaway:
    steps:
      - {{name: first, type: step.set, config: {{values: {{n: "1"}}}}}}
      - {{name: sibling, type: step.shell_exec, needs: [first], config: {{commands: ["true"]}}}}
      - {{name: stuck, type: step.log, needs: [first], if: "{RUNAWAY}", config: {{message: never}}}}
"""

OTHER_PIPELINE = """
version: 1
pipelines:
  other:
    steps:
      - {name: a, type: step.set, config: {values: {n: "1"}}}
      - {name: b, type: step.log, needs: [a], if: '{{ eq .steps.a.n "1" }}', config: {message: ran}}
      - {name: c, type: step.shell_exec, needs: [b], config: {commands: ["echo done"]}}
"""


def test_a_runaway_condition_leaves_other_runs_and_steps_alone(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
) -> None:
    # Given three workers whose templates may run for 40 s
    cluster.overrides.update(LIMITS)
    workers = [cluster.worker(f"w{i}", "control,sandbox", 1) for i in range(3)]
    cluster.wait_ready(*workers)

    # When a run reaches a condition that loops without printing
    runaway = submitter.submit(RUNAWAY_PIPELINE)
    wait_until(
        lambda: pg_store.get_step(runaway.id, "first").status == StepStatus.SUCCEEDED,
        BOUND,
        "the runaway run's first step",
        cluster,
    )

    # Then, while that condition is still being evaluated, the same run's other step
    # finishes (its row is not locked) and other runs, with conditions of their own, end
    others = [submitter.submit(OTHER_PIPELINE) for _ in range(3)]
    wait_until(
        lambda: pg_store.get_step(runaway.id, "sibling").status == StepStatus.SUCCEEDED,
        BOUND,
        "the runaway run's sibling step",
        cluster,
    )
    for other in others:
        assert submitter.wait(other.id, BOUND, cluster).status.value == "succeeded"
    stuck = pg_store.get_step(runaway.id, "stuck")
    assert stuck.status == StepStatus.PENDING, _timeline(
        pg_store, [runaway.id, *(o.id for o in others)]
    )

    # ...and the runaway condition ends as a failed step, naming the limit
    run = submitter.wait(runaway.id, BOUND, cluster)
    stuck = pg_store.get_step(runaway.id, "stuck")
    assert stuck.status == StepStatus.FAILED
    assert "CONVEYOR_TEMPLATE_MAX_SECONDS" in (stuck.last_error or ""), stuck.last_error
    assert run.status.value == "failed"


def _timeline(store: SqlStore, run_ids: list[str]) -> str:
    """The runs' events in time order, for a failure message."""
    events = [
        (e.created_at, run_id[-6:], e.step_key, e.type, e.payload.get("owner", ""))
        for run_id in run_ids
        for e in store.list_events(run_id)
    ]
    return "\n".join(" ".join(map(str, e)) for e in sorted(events, key=lambda e: e[0]))
