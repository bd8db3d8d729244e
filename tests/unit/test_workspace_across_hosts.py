"""A run's workspace handed between worker hosts that share no directory.

Two cores wired as two worker hosts (their own data directories, one database, one
artifact store), each executing only its queues; the test plays the broker, so which
host runs which step is certain. What each step finds is what a user would see.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine import Core, wire
from conveyor.orchestrator.engine.recovery import retry_run
from conveyor.orchestrator.engine.source_archive import new_run_id, pack_source, store_source
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


def submit_with_source(host: Host, text: str, source: Path) -> str:
    """Start a run whose workspace begins as ``source`` (as ``POST /runs`` with one)."""
    archive = source.parent / "source.tar.gz"
    pack_source(source, archive)
    run_id = new_run_id()
    checksum = store_source(host.core.artifact_store(), run_id, archive)
    plan = host.core.compiler.compile(text).select(None)
    plan = plan.model_copy(update={"workspace_source": checksum})
    compiled = host.core.compiler.compile(text)
    return host.core.runtime.submit(plan, compiled.source, {}, run_id=run_id).id


SEEDED = """
pipelines:
  p:
    steps:
      - name: edit
        type: step.shell_exec
        config:
          commands: ["sleep 0.2", "echo edited > notes.txt"]
      - name: other
        type: step.shell_exec
        queue: scan
        needs: []
        config:
          commands: ["sleep 1", "echo other > other.txt"]
      - name: last
        type: step.shell_exec
        queue: scan
        needs: [edit, other]
        config:
          commands:
            - test "$(cat notes.txt)" = edited && test -f other.txt && test -f keep/me.txt
"""


def test_a_runs_source_is_its_first_workspace_and_never_undoes_a_later_change(
    hosts: tuple[MemoryDispatcher, Host, Host], tmp_path: Path
) -> None:
    # Given a source, and two steps that start from it at once on two hosts: `edit`
    # changes a file of it and finishes first; `other` (which does not need `edit`)
    # finishes later
    source = tmp_path / "src"
    (source / "keep").mkdir(parents=True)
    (source / "keep" / "me.txt").write_text("kept\n")
    (source / "notes.txt").write_text("original\n")
    sent, a, b = hosts
    run_id = submit_with_source(a, SEEDED, source)

    # When both run at once, then `last` on host b
    first = [ref for ref, _ in sent.sent]
    sent.sent.clear()
    assert sorted(r.step_key for r in first) == ["edit", "other"]
    threads = [
        threading.Thread(
            target=(a if r.queue == "sandbox" else b).core.running().execute, args=(r,)
        )
        for r in first
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    status = drive(sent, a, b, run_id)

    # Then `other` publishing later did not bring the source's notes.txt back over
    # `edit`'s: the source is published once, as the run's first workspace
    steps = {s.key: s for s in a.core.store.list_steps(run_id)}
    assert status == RunStatus.SUCCEEDED, {k: s.last_error for k, s in steps.items()}


def test_a_failed_step_alone_on_its_host_leaves_nothing_there(
    hosts: tuple[MemoryDispatcher, Host, Host],
) -> None:
    sent, a, b = hosts
    text = """
pipelines:
  p:
    steps:
      - name: first
        type: step.shell_exec
        config: {commands: ["echo one > one.txt", "echo kept > two.txt"]}
      - name: broken
        type: step.shell_exec
        needs: [first]
        on_error: continue
        config: {commands: ["echo junk > junk.txt", "rm one.txt", "echo bad > two.txt", "exit 3"]}
      - name: after
        type: step.shell_exec
        needs: [broken]
        config:
          commands:
            - test ! -e junk.txt && test -f one.txt && test "$(cat two.txt)" = kept
"""
    compiled = a.core.compiler.compile(text)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})

    # When `broken` fails on host a, where `after` then runs
    status = drive(sent, a, b, run.id)

    # Then `after` saw the workspace as `first` left it, and broken's log says so
    steps = {s.key: s for s in a.core.store.list_steps(run.id)}
    assert steps["broken"].status.value == "failed"
    assert status == RunStatus.SUCCEEDED, {k: s.last_error for k, s in steps.items()}
    logs = [r.text for r in a.core.store.list_logs(run.id) if r.step_key == "broken"]
    assert "workspace: what this attempt changed here was undone" in logs


def blob_files(root: Path) -> list[Path]:
    """Workspace blobs and manifests kept in the local artifact store under ``root``."""
    return [p for p in root.rglob("*") if p.is_file() and {".blobs", ".manifests"} & set(p.parts)]


def test_a_failed_runs_workspace_is_kept_for_a_retry_until_retention_removes_it(
    hosts: tuple[MemoryDispatcher, Host, Host], tmp_path: Path
) -> None:
    sent, a, b = hosts
    text = PIPELINE.replace("./build.sh > built.txt", "exit 4")
    compiled = a.core.compiler.compile(text)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})
    assert drive(sent, a, b, run.id) == RunStatus.FAILED

    # A failed run keeps its handed-over workspace: checkout's three files and scan's
    # file (scanned.txt holds main.py's bytes: one blob), and two manifests
    kept = blob_files(tmp_path / "artifacts")
    assert a.core.store.workspace_head(run.id) is not None
    assert len([p for p in kept if ".blobs" in p.parts]) == 3
    assert len([p for p in kept if ".manifests" in p.parts]) == 2
    # and the reconciler's sweep leaves it (only succeeded runs' go)
    assert a.core.reconciler.run_once().workspaces_removed == 0

    # When its artifacts' retention has passed
    later = utcnow() + timedelta(days=2)
    assert a.core.retention.expire(run.id, 3600.0, later)

    # Then its workspace went with them: no head, no blob, no manifest
    assert a.core.store.workspace_head(run.id) is None
    assert blob_files(tmp_path / "artifacts") == []


def test_retrying_a_failed_run_starts_its_step_from_what_its_needs_left(
    hosts: tuple[MemoryDispatcher, Host, Host], tmp_path: Path
) -> None:
    # Given a run whose last step failed on host a, where the run's copy was removed
    # when it ended
    sent, a, b = hosts
    flag = tmp_path / "fixed"
    text = PIPELINE.replace("./build.sh > built.txt", f"test -e {flag} && ./build.sh > built.txt")
    compiled = a.core.compiler.compile(text)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})
    assert drive(sent, a, b, run.id) == RunStatus.FAILED
    assert not a.workspace(run.id).exists()

    # When it is retried once the cause is fixed
    flag.touch()
    retry_run(a.core.runtime, run.id)

    # Then `build` ran again on host a with checkout's and scan's files
    status = drive(sent, a, b, run.id)
    steps = {s.key: s for s in a.core.store.list_steps(run.id)}
    assert status == RunStatus.SUCCEEDED, {k: s.last_error for k, s in steps.items()}
    assert steps["build"].attempts == 2


@pytest.mark.parametrize("harm", ["tampered", "missing"])
def test_a_blob_that_is_not_what_the_manifest_says_fails_the_step_in_one_line(
    hosts: tuple[MemoryDispatcher, Host, Host], tmp_path: Path, harm: str
) -> None:
    # Given checkout ran on host a and one of its blobs is then harmed in the store
    sent, a, b = hosts
    compiled = a.core.compiler.compile(PIPELINE)
    run = a.core.runtime.submit(compiled.select(None), compiled.source, {})
    ref, _ = sent.sent.pop(0)
    a.core.running().execute(ref)
    blobs = [p for p in blob_files(tmp_path / "artifacts") if ".blobs" in p.parts]
    victim = next(p for p in blobs if p.stat().st_size == len("print(1)\n"))
    if harm == "tampered":
        victim.write_text("print(2)\n")
    else:
        victim.unlink()
    outside = sorted(p.name for p in tmp_path.iterdir())

    # When scan starts on host b
    assert drive(sent, a, b, run.id) == RunStatus.FAILED

    # Then it failed saying which blob and file, and nothing was written outside
    scan = next(s for s in a.core.store.list_steps(run.id) if s.key == "scan")
    assert scan.last_error is not None and "\n" not in scan.last_error
    assert victim.name in scan.last_error and "src/pkg/main.py" in scan.last_error
    assert ("does not match" if harm == "tampered" else "missing") in scan.last_error
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    assert not (b.workspace(run.id) / "src" / "pkg" / "main.py").exists()
