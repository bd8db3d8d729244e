"""What Flower sees of a run: one task per step, named for its type, failed when it failed.

A real ``conveyor worker`` runs the steps; the test listens to Celery's task events
with ``app.events.Receiver`` into an ``app.events.State``, which is exactly what Flower
does, and reads the tasks from that state.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.events.state import State, Task

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.workers_kit import Stack, Submitter, lines, queue_length, wait_until

pytestmark = pytest.mark.postgres

BRIEF = 20  # more than one message's worth (16) of brief steps


class Monitor:
    """Celery's task events, read the way Flower reads them, in a thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.state: State = app.events.State()
        self.heard = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.app.connection_for_read() as conn:
            receiver = self.app.events.Receiver(conn, handlers={"*": self._on})
            while not self._stop:
                receiver.should_stop = False
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    def _on(self, event: dict[str, Any]) -> None:
        if event["type"] == "conveyor-test-ping":
            self.heard.set()
            return
        self.state.event(event)

    def __enter__(self) -> Monitor:
        self._thread.start()
        until = time.monotonic() + 30
        while not self.heard.is_set():  # events are not kept: listen before anything runs
            assert time.monotonic() < until, "the event receiver never heard its own ping"
            with self.app.events.default_dispatcher() as dispatcher:
                dispatcher.send("conveyor-test-ping")
            self.heard.wait(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True

    def tasks_of(self, run_id: str) -> dict[tuple[str, int], list[Task]]:
        """The tasks whose arguments name this run, by (step, attempt)."""
        found: dict[tuple[str, int], list[Task]] = {}
        for _, task in self.state.tasks_by_time():
            if not task.args:
                continue
            args = ast.literal_eval(task.args)
            if isinstance(args, tuple) and len(args) == 3 and args[0] == run_id:
                found.setdefault((args[1], int(args[2])), []).append(task)
        return found


@pytest.fixture
def monitor(submitter: Submitter) -> Iterator[Monitor]:
    """Flower's view of the test's broker, listening from now on."""
    with Monitor(submitter.app) as watching:
        yield watching


def pipeline(marker: Path) -> str:
    """build -> package (its chain), then 20 brief steps and a step failing twice."""
    sets = "".join(
        f"      - {{name: s{i}, type: step.set, needs: [package], "
        f"config: {{values: {{n: '{i}'}}}}}}\n"
        for i in range(BRIEF)
    )
    return (
        "pipelines:\n  watched:\n    steps:\n"
        "      - {name: build, type: step.shell_exec, config: {commands: ['true']}}\n"
        "      - {name: package, type: step.shell_exec, config: {commands: ['true']}}\n"
        f"{sets}"
        "      - {name: broken, type: step.shell_exec, needs: [package],\n"
        "         retry: {max_attempts: 2, backoff: 0s},\n"
        f"         config: {{commands: ['echo ran >> {marker}; exit 3']}}}}\n"
    )


def test_flower_lists_every_step_as_a_task_of_its_type_failed_when_it_failed(
    cluster: Stack, submitter: Submitter, pg_store: SqlStore, monitor: Monitor, tmp_path: Path
) -> None:
    # Given one worker, as deployed (no -E: Conveyor turns task events on itself)
    worker = cluster.worker("w", "sandbox,control")
    cluster.wait_ready(worker)
    marker = tmp_path / "broken.marker"
    # When a run goes build -> package, then twenty step.set steps (that ride two
    # messages) and a step that fails on both of its attempts
    run = submitter.submit(pipeline(marker))
    assert submitter.wait(run.id, 90, cluster).status == "failed"
    steps = {s.key: s for s in pg_store.list_steps(run.id)}
    ran = [(key, n) for key, s in steps.items() for n in range(1, s.attempts + 1)]
    assert len(ran) == 2 + BRIEF + 2
    done = ("SUCCESS", "FAILURE")

    def all_shown() -> bool:
        shown = monitor.tasks_of(run.id)
        return all(k in shown and shown[k][-1].state in done for k in ran)

    wait_until(all_shown, 30, "a finished task for every step attempt", cluster)
    shown = monitor.tasks_of(run.id)
    # Then every attempt of every step is one task of its own in Flower's list, named
    # for its step type, its arguments the run, the step and the attempt, and its
    # pipeline among its keyword arguments
    assert sorted(shown) == sorted(ran)
    for (key, attempt), tasks in shown.items():
        assert len(tasks) == 1, f"{key} #{attempt} shown {len(tasks)} times"
        task = tasks[0]
        assert task.name == f"conveyor.{steps[key].type}", (key, task.name)
        assert ast.literal_eval(task.kwargs) == {"pipeline": "watched"}, (key, task.kwargs)
        assert task.worker is not None and task.worker.hostname.startswith("w@")
    # and the steps that succeeded are SUCCESS, the failed attempts FAILURE with the
    # step's own error, without a traceback in the worker's log
    for key in ("build", "package", *(f"s{i}" for i in range(BRIEF))):
        assert shown[(key, 1)][0].state == "SUCCESS", (key, shown[(key, 1)][0].info())
    for attempt in (1, 2):
        failed = shown[("broken", attempt)][0]
        assert failed.state == "FAILURE", failed.info()
        assert "AttemptFailed" in failed.exception and "exit" in failed.exception
    assert "Traceback" not in worker.text()
    # And the engine did what it always did: two attempts, as the retry policy says,
    # each run once; no message redelivered or left unacknowledged
    assert steps["broken"].attempts == 2 and len(lines(marker)) == 2
    assert steps["broken"].status == "failed"
    assert queue_length(cluster.broker_url, "sandbox") == 0
    assert queue_length(cluster.broker_url, "control") == 0
    assert redis.Redis.from_url(cluster.broker_url).hlen("unacked") == 0
