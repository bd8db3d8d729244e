"""Runs' workspace heads and the live worker hosts, on every store (the twin, SQLite,
Postgres): what hands a run's workspace from host to host, and routes its steps."""

from __future__ import annotations

import threading
from datetime import timedelta

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import Store, WorkspaceHead
from conveyor.orchestrator.status import RunStatus
from tests.unit.test_store import new_run


def test_a_run_has_no_workspace_until_a_step_publishes_one(store: Store) -> None:
    run_id = new_run(store)
    assert store.workspace_head(run_id) is None
    assert store.workspace_head("no-such-run") is None


def test_the_head_moves_only_from_what_the_publisher_read(store: Store) -> None:
    run_id = new_run(store)
    assert store.move_workspace_head(run_id, None, "a" * 64, "h1")
    # A second publisher that read "no head" lost the race: it must read again
    assert not store.move_workspace_head(run_id, None, "b" * 64, "h2")
    assert not store.move_workspace_head(run_id, "c" * 64, "b" * 64, "h2")
    assert store.move_workspace_head(run_id, "a" * 64, "b" * 64, "h2")
    assert store.workspace_head(run_id) == WorkspaceHead("b" * 64, "h2")


def test_concurrent_publishers_each_land_once_after_another(store: Store) -> None:
    # Given 8 publishers that each retry with what they read, as the handoff does
    run_id = new_run(store)
    landed: list[str] = []
    lock = threading.Lock()

    def publish(n: int) -> None:
        digest = f"{n:064x}"
        while True:
            head = store.workspace_head(run_id)
            if store.move_workspace_head(run_id, head.digest if head else None, digest, "h"):
                with lock:
                    landed.append(digest)
                return

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Then every one landed, and the head is the last that did
    assert sorted(landed) == sorted(f"{n:064x}" for n in range(8))
    head = store.workspace_head(run_id)
    assert head is not None and head.digest == landed[-1]


def test_only_succeeded_runs_are_swept_of_their_workspace(store: Store) -> None:
    kept, done = new_run(store), new_run(store)
    for run_id in (kept, done):
        store.move_workspace_head(run_id, None, "a" * 64, "h1")
    with store.transaction(done) as tx:
        tx.move_run(RunStatus.SUCCEEDED)
    with store.transaction(kept) as tx:
        tx.move_run(RunStatus.FAILED)

    # A failed run keeps its workspace (for a retry); a succeeded one is swept
    assert store.succeeded_with_workspace() == [done]
    assert store.forget_workspace(done) == WorkspaceHead("a" * 64, "h1")
    assert store.workspace_head(done) is None
    assert store.forget_workspace(done) is None
    assert store.succeeded_with_workspace() == []


def test_hosts_are_live_while_they_announce_their_queues(store: Store) -> None:
    before = utcnow() - timedelta(seconds=1)
    store.announce_host("h1", ["sandbox", "scan"])
    store.announce_host("h2", ["sandbox"])
    assert store.live_hosts(before) == {
        "sandbox": frozenset({"h1", "h2"}),
        "scan": frozenset({"h1"}),
    }
    # Two workers of one host announce their own queues; a withdrawal removes the
    # queues named (a warm shutdown), or all of the host's
    store.announce_host("h1", ["scan"])
    store.announce_host("h1", ["deploy"])
    store.withdraw_host("h1", ["sandbox"])
    store.withdraw_host("h2")
    assert store.live_hosts(before) == {
        "scan": frozenset({"h1"}),
        "deploy": frozenset({"h1"}),
    }
    # A host not heard of since the cutoff is not live
    assert store.live_hosts(utcnow() + timedelta(seconds=5)) == {}


def test_runs_over_or_gone_are_those_whose_workspaces_can_go(store: Store) -> None:
    going, over = new_run(store), new_run(store)
    with store.transaction(over) as tx:
        tx.move_run(RunStatus.CANCELLED)
    assert store.runs_ended([going, over, "gone"]) == {over, "gone"}
    assert store.runs_ended([]) == set()
