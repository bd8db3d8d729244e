"""A process killed while it submits a run leaves no run that never starts.

The submitting process (what the API does for ``POST /runs``: compile, then
``Runtime.submit`` with the Celery dispatcher) is SIGKILLed after each SQL statement
it sends in turn, and once after its transaction committed but before its message
went out. Then each request is retried with its Idempotency-Key, as a client does,
getting the stored run if there is one (as ``POST /runs`` answers); workers and the
reconciler run; every run stored must finish.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.conftest import broker_url, cluster, submitter  # noqa: F401
from tests.integration.workers_kit import Stack, Submitter

pytestmark = pytest.mark.postgres

PIPELINE = """\
pipelines:
  p:
    steps:
      - {name: a, type: step.set, config: {values: {x: '1'}}}
      - {name: b, type: step.log, needs: [a], config: {message: 'after a'}}
      - {name: c, type: step.set, needs: [], config: {values: {y: '2'}}}
"""

#: Submits one run with an Idempotency-Key, SIGKILLing itself at a chosen point:
#: after the N-th SQL statement, or ("dispatch") once committed, before sending.
SUBMIT = textwrap.dedent(
    """
    import os, signal, sys
    import sqlalchemy as sa
    from conveyor.orchestrator.engine.runtime import Runtime
    from conveyor.orchestrator.pipeline.plan import Compiler
    from conveyor.orchestrator.plugins import StepTypes
    from conveyor.orchestrator.settings import Settings
    from conveyor.orchestrator.store.sql import SqlStore
    from conveyor.workers.app import make_celery
    from conveyor.workers.dispatcher import CeleryDispatcher

    point, key, text = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
    settings = Settings()
    store = SqlStore(settings.resolved_database_url)
    compiler = Compiler.for_settings(settings, StepTypes())
    plan = compiler.compile(text)
    dispatcher = CeleryDispatcher(make_celery(settings))
    runtime = Runtime(store, compiler.templates, dispatcher)
    count = 0

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def counted(*_):
        global count
        count += 1
        if point == str(count):
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "dispatch":
        def killed(ref, eta=None):
            os.kill(os.getpid(), signal.SIGKILL)
        dispatcher.dispatch = killed
    runtime.submit(plan.select(None), plan.source, {}, idempotency_key=key)
    dispatcher.close()
    print(f"statements={count}")
    """
)


def submit(
    stack: Stack, root: Path, point: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    script, text = root / "submit.py", root / "pipeline.yaml"
    return subprocess.run(
        [sys.executable, str(script), point, key or f"key-{point}", str(text)],
        env=stack.env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_run_stored_by_a_killed_submitter_finishes(
    cluster: Stack,  # noqa: F811
    submitter: Submitter,  # noqa: F811
    pg_store: SqlStore,
    tmp_path: Path,
) -> None:
    (tmp_path / "submit.py").write_text(SUBMIT)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    # (The first run also stores the pipeline's definition: the second counts.)
    for key in ("whole-1", "whole-2"):
        whole = submit(cluster, tmp_path, "none", key)
        assert whole.returncode == 0, whole.stderr
    statements = int(whole.stdout.strip().rsplit("=", 1)[1])
    assert statements >= 3

    # Given a submitting process killed after each of its statements in turn, and
    # once after it committed but before its message went out
    points = [str(n) for n in range(1, statements + 1)] + ["dispatch"]
    with ThreadPoolExecutor(3) as pool:
        outcomes = dict(
            zip(points, pool.map(lambda p: submit(cluster, tmp_path, p), points), strict=True)
        )
    assert all(o.returncode == -9 for o in outcomes.values()), {
        p: (o.returncode, o.stderr[-500:]) for p, o in outcomes.items() if o.returncode != -9
    }

    # When each request is retried with its key: the run stored under it, or a new one
    compiled = submitter.compiler.compile(PIPELINE)
    for point in points:
        key = f"key-{point}"
        if pg_store.run_by_idempotency_key(key) is None:
            submitter.runtime.submit(
                compiled.select(None), compiled.source, {}, idempotency_key=key
            )

    # Then, once a worker and the reconciler run, every stored run finishes
    cluster.wait_ready(cluster.worker("w", "control"), cluster.beat())
    runs = pg_store.list_runs(limit=1000)
    assert len(runs) == len(points) + 2
    for run in runs:
        assert submitter.wait(run.id, 60, cluster).status == "succeeded"
