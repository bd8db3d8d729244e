"""Worker hosts: each host's id, the queue a step message goes to, and the sweep of
workspaces of runs that are over."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.workspace import host_id
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.workers.hosts import (
    HostAnnouncer,
    HostRouter,
    host_queue,
    served_queues,
)
from tests.unit.test_store import new_run


def _read_host_id(path: str, out: multiprocessing.Queue[str]) -> None:
    out.put(host_id(Path(path)))


def test_processes_sharing_a_data_directory_are_one_host(tmp_path: Path) -> None:
    # Given 6 processes asking for the host id of one new data directory at once
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_read_host_id, args=(str(tmp_path / "d"), out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    ids = {out.get(timeout=5) for _ in procs}
    # Then they all got the same one, and it stays; another directory is another host
    assert len(ids) == 1
    assert host_id(tmp_path / "d") in ids
    assert host_id(tmp_path / "other") not in ids
    assert not [p for p in (tmp_path / "d").iterdir() if p.name != "host-id"]


def test_a_worker_serves_its_queues_and_its_hosts_own() -> None:
    names = ["sandbox", "scan", host_queue("sandbox", "h1"), host_queue("scan", "h1")]
    assert served_queues(names) == {"sandbox", "scan"}


def test_steps_go_to_the_live_host_that_holds_their_runs_workspace(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.upgrade()
    try:
        router = HostRouter(store, Settings(data_dir=tmp_path))
        run_id = new_run(store)
        ref = StepRef(run_id, "s0", 1, "sandbox")
        # No workspace yet: the shared queue
        assert router.queue_for(ref, brief=False) == "sandbox"
        store.move_workspace_head(run_id, None, "a" * 64, "h1")
        # Its host is not live yet (router's view is read again after its TTL)
        assert router.queue_for(ref, brief=False) == "sandbox"
        store.announce_host("h1", ["sandbox"])
        store.announce_host("h2", ["scan"])
        router._read_at = float("-inf")
        router._heads.clear()
        assert router.queue_for(ref, brief=False) == host_queue("sandbox", "h1")
        # The host does not serve the step's queue, the step is brief, or a re-send
        assert router.queue_for(StepRef(run_id, "s0", 1, "scan"), brief=False) == "scan"
        assert router.queue_for(ref, brief=True) == "sandbox"
        resend = StepRef(run_id, "s0", 1, "sandbox", anywhere=True)
        assert router.queue_for(resend, brief=False) == "sandbox"
        # A host that withdrew (warm shutdown) gets nothing more
        store.withdraw_host("h1")
        router._read_at = float("-inf")
        router._heads.clear()
        assert router.queue_for(ref, brief=False) == "sandbox"
    finally:
        store.close()


def test_a_host_removes_its_copies_of_workspaces_of_runs_that_are_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = SqlStore(url)
    store.upgrade()
    settings = Settings(data_dir=tmp_path / "host", database_url=url)
    going, over = new_run(store), new_run(store)
    with store.transaction(over) as tx:
        tx.move_run(RunStatus.SUCCEEDED)
    for run_id in (going, over, "deleted-run"):
        (settings.workspace_root / run_id / "src").mkdir(parents=True)
    state = settings.data_dir / "workspace-state"
    state.mkdir()
    (state / f"{over}.manifest").write_bytes(b"")
    (state / f"{over}.cache").write_text("{}")
    (state / f"{over}.active").mkdir()
    announcer = HostAnnouncer(settings, "h1", ["sandbox"])
    try:
        assert announcer.sweep() == 2
        assert sorted(p.name for p in settings.workspace_root.iterdir()) == [going]
        assert not list(state.iterdir())
    finally:
        announcer.stop()
        store.close()
