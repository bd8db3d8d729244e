"""A whole worker host killed mid-run: its step moves to another host, with its files.

Each host is a network namespace made by the test (``unshare --net``) with a data
directory of its own: its workers reach Postgres, Redis and the S3 store (moto) only
through 127.0.0.1 of that namespace, where a relay of the host's forwards them over
unix sockets to a relay outside. Killing the host SIGKILLs every process in the
namespace (workers, pool children, the step's shell, the relay) and the relay
outside: every connection it had is cut at once, as when a machine dies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hosts_kit import Cluster, cluster
from tests.integration.test_multi_host import explain, output, outputs, pipeline
from tests.integration.workers_kit import Submitter, assert_gap_free, lines, wait_until

pytestmark = pytest.mark.postgres

SMALL = {
    "CONVEYOR_LEASE_SECONDS": "4",
    "CONVEYOR_HEARTBEAT_SECONDS": "0.5",
    "CONVEYOR_RECONCILE_SECONDS": "0.5",
    "CONVEYOR_STALE_AFTER_SECONDS": "1",
}
LEASE, RECONCILE, STALE = 4.0, 0.5, 1.0
#: What a loaded two-core machine may add (a pool process starting, the files coming).
SLACK = 10.0
EVERY_QUEUE = "sandbox,scan,control"


def step(name: str, *commands: str, env: dict[str, str] | None = None, **extra: Any) -> Any:
    """A step.shell_exec step of ``commands`` with ``env`` for them."""
    config = {"commands": list(commands), "env": env or {}}
    return {"name": name, "type": "step.shell_exec", "config": config, **extra}


def crossing(marker: Path) -> str:
    """checkout -> slow (sleeps on its first attempt only) -> scan -> final."""
    return pipeline(
        step(
            "checkout",
            "mkdir -p src empty",
            "echo 'print(1)' > src/app.py",
            "printf '#!/bin/sh\\necho tool ran\\n' > tool.sh && chmod 755 tool.sh",
            "ln -s src/app.py latest",
        ),
        step(
            "slow",
            'echo "$$" >> "$MARKER"',
            '[ "$(wc -l < "$MARKER")" -ge 2 ] || sleep 300',
            'test "$(cat latest)" = "print(1)" && test -d empty && ./tool.sh',
            "echo slow > slow.txt",
            env={"MARKER": str(marker)},
        ),
        step("scan", output("slow", "cat slow.txt"), "echo scanned > scan.txt", queue="scan"),
        step(
            "final",
            output("files", "cat latest slow.txt scan.txt | tr '\\n' ' '"),
            output("tool", "./tool.sh"),
            output("empty", "ls -A empty | wc -l"),
        ),
    )


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Cluster]:
    """Short leases and a fast reconciler; hosts are started by the test."""
    with cluster(tmp_path, **SMALL) as result:
        yield result


def test_a_killed_hosts_step_runs_on_another_host_with_the_files_of_its_needs(
    hosts: Cluster, tmp_path: Path
) -> None:
    # Given host a alone, running the slow step of a run whose checkout it also ran
    a = hosts.host("a", [EVERY_QUEUE], netns=True)
    submitter = Submitter(hosts.store, hosts.workers.settings)
    try:
        marker = tmp_path / "slow.marker"
        run = submitter.submit(crossing(marker))
        wait_until(lambda: len(lines(marker)) == 1, 90, "slow to start on a", hosts.workers)
        # And host b (with the reconciler's clock) up beside it
        b = hosts.host("b", [EVERY_QUEUE], netns=True, beat=True)
        assert a.netns != b.netns
        assert hosts.ran_on(hosts.store.list_events(run.id), "slow") == ["a"]

        # When host a dies: every process in it at once, its relays included
        hosts.kill(a)
        killed = time.monotonic()

        # Then b runs the slow step again within the lease and a pass or two
        within = LEASE + STALE + 2 * RECONCILE + SLACK
        wait_until(lambda: len(lines(marker)) == 2, within, "slow again on b", hosts.workers)
        print(f"re-run {time.monotonic() - killed:.2f}s after the kill")
        ended = submitter.wait(run.id, 60, hosts.workers)
    finally:
        submitter.close()

    # And the run completes, the steps after it seeing the files of their needs
    assert ended.status.value == "succeeded", explain(hosts, ended)
    steps = {s.key: s for s in hosts.store.list_steps(run.id)}
    said = outputs(hosts, run.id)
    assert said["scan"].get("slow") == "slow"
    assert {k: said["final"].get(k) for k in ("files", "tool", "empty")} == {
        "files": "print(1) slow scanned ",
        "tool": "tool ran",
        "empty": "0",
    }
    # And only the step that was running when a died ran twice
    events = hosts.store.list_events(run.id)
    where = {key: hosts.ran_on(events, key) for key in steps}
    assert where == {"checkout": ["a"], "slow": ["a", "b"], "scan": ["b"], "final": ["b"]}
    assert {key: s.attempts for key, s in steps.items()} == {
        "checkout": 1,
        "slow": 2,
        "scan": 1,
        "final": 1,
    }
    assert len(lines(marker)) == 2
    # And the run's event log has no gap
    assert_gap_free(events)
