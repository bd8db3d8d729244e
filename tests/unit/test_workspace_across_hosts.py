"""A run's workspace handed between worker hosts that share no directory.

Two cores wired as two worker hosts (their own data directories, one database, one
artifact store), each executing only its queues; the test plays the broker, so which
host runs which step is certain. What each step finds is what a user would see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.orchestrator.engine import Core, wire
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing.dispatch import MemoryDispatcher


@dataclass
class Host:
    name: str
    settings: Settings
    core: Core

    def workspace(self, run_id: str) -> Path:
        return self.settings.workspace_root / run_id


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[MemoryDispatcher, Host, Host]]:
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    SqlStore(url).upgrade()
    sent = MemoryDispatcher()
    made: list[Host] = []
    for name, queues in (("a", ["sandbox"]), ("b", ["scan"])):
        settings = Settings(
            data_dir=tmp_path / name, database_url=url, artifact_dir=tmp_path / "artifacts"
        )
        store = SqlStore(url)
        core = wire(settings, store, dispatcher=sent, queues=queues, handoff=True)
        made.append(Host(name, settings, core))
    yield sent, made[0], made[1]
    for host in made:
        host.core.running().stop()
        host.core.store.close()


def drive(sent: MemoryDispatcher, a: Host, b: Host, run_id: str) -> RunStatus:
    """Deliver every message to the host serving its queue until the run ends."""
    for _ in range(50):
        while sent.sent:
            ref, _ = sent.sent.pop(0)
            (a if ref.queue == "sandbox" else b).core.running().execute(ref)
        run = a.core.store.get_run(run_id)
        if run.status.terminal:
            return run.status
    raise AssertionError("the run did not end")


PIPELINE = """
pipelines:
  p:
    steps:
      - name: checkout
        type: step.shell_exec
        config:
          commands:
            - mkdir -p src/pkg empty && echo 'print(1)' > src/pkg/main.py
            - printf '#!/bin/sh\\necho built\\n' > build.sh && chmod 755 build.sh
            - ln -s src/pkg/main.py entry.py && echo gone > stale.txt
      - name: scan
        type: step.shell_exec
        queue: scan
        needs: [checkout]
        config:
          commands:
            - test -x build.sh && test -d empty && test -L entry.py
            - cat entry.py > scanned.txt && rm stale.txt
      - name: build
        type: step.shell_exec
        needs: [scan]
        config:
          commands:
            - test "$(cat scanned.txt)" = 'print(1)' && test ! -e stale.txt
            - ./build.sh > built.txt
"""


def test_each_step_sees_what_its_needs_left_on_another_host(
    hosts: tuple[MemoryDispatcher, Host, Host],
) -> None:
    sent, a, b = hosts
    compiled = a.core.compiler.compile(PIPELINE)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})

    status = drive(sent, a, b, run.id)

    steps = {s.key: s for s in a.core.store.list_steps(run.id)}
    errors = {k: s.last_error for k, s in steps.items() if s.last_error}
    assert status == RunStatus.SUCCEEDED, errors
    # The scan host got checkout's files (link, exec bit, empty dir) and its removal of
    # stale.txt reached the build host; the log says what travelled
    logs = [r.text for r in a.core.store.list_logs(run.id) if r.step_key == "scan"]
    assert any(line.startswith("workspace: fetched") for line in logs), logs


def test_a_step_that_fails_publishes_nothing(hosts: tuple[MemoryDispatcher, Host, Host]) -> None:
    sent, a, b = hosts
    text = PIPELINE.replace("cat entry.py > scanned.txt && rm stale.txt", "rm stale.txt; exit 3")
    compiled = a.core.compiler.compile(text)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})

    assert drive(sent, a, b, run.id) == RunStatus.FAILED
    # The run's workspace is what checkout left: the failed scan's removal is not in it
    head = a.core.store.workspace_head(run.id)
    assert head is not None and head.host == a.core.running().workspaces.handoff.host  # type: ignore[union-attr]
    assert (a.workspace(run.id) / "stale.txt").exists()


def test_a_succeeded_run_leaves_no_workspace_in_the_store(
    hosts: tuple[MemoryDispatcher, Host, Host], tmp_path: Path
) -> None:
    sent, a, b = hosts
    compiled = a.core.compiler.compile(PIPELINE)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})
    assert drive(sent, a, b, run.id) == RunStatus.SUCCEEDED

    assert a.core.store.workspace_head(run.id) is None
    left = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert left == []
    assert not a.workspace(run.id).exists() or not os.listdir(a.workspace(run.id))
