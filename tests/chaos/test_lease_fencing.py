"""Fencing by time: an attempt that cannot renew its lease stops before anyone else may run it.

The store's lease renewal is made to fail (the database away longer than a lease, for
this worker only); the step's real processes, a detached one included, must be gone
before the lease could have run out, and the attempt must record nothing, so that the
attempt the reconciler starts next is the only one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.errors import StoreUnavailable
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from tests.chaos.process_kit import alive, detached, read_pid, reap, wait_gone
from tests.unit.engine_kit import eventually, log_text, pipeline, start, step, step_types

pytestmark = pytest.mark.timeout(120)

LEASE = 4.0
MARGIN = 1.0


class OutageStore(SqlStore):
    """A store whose lease renewals fail while ``down`` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = threading.Event()
        self.renewed = 0

    def renew_leases(self, step_ids: Sequence[str], owner: str, until: datetime) -> dict[str, str]:
        if self.down.is_set():
            raise StoreUnavailable("the database is unavailable (injected)")
        self.renewed += 1
        return super().renew_leases(step_ids, owner, until)


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[EmbeddedEngine, OutageStore]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        lease_seconds=LEASE,
        heartbeat_seconds=0.2,
        lease_margin_seconds=MARGIN,
        log_flush_seconds=0.05,
    )
    store = OutageStore(settings.resolved_database_url)
    store.upgrade()
    engine = EmbeddedEngine(settings, step_types=step_types(), store=store)
    try:
        yield engine, store
    finally:
        engine.dispatcher.close(wait=False)
        engine.executor.stop()
        store.close()


def test_an_attempt_that_cannot_renew_its_lease_kills_its_processes_in_time(
    outage: tuple[EmbeddedEngine, OutageStore], tmp_path: Path
) -> None:
    engine, store = outage
    shell_pid, setsid_pid = tmp_path / "shell.pid", tmp_path / "setsid.pid"
    command = f"echo $$ > {shell_pid}; {detached(setsid_pid)} sleep 1000"
    text = pipeline(
        f"- name: long\n  type: step.shell_exec\n  config:\n    commands: [{json.dumps(command)}]\n"
    )
    run_id = start(engine, text)
    pids = [read_pid(shell_pid), read_pid(setsid_pid)]
    try:
        # Given a step whose lease renews well past a whole lease
        renewals = store.renewed
        time.sleep(LEASE + 1)
        assert store.renewed > renewals
        assert all(alive(pid) for pid in pids), "a step whose lease renews was stopped"
        # When its renewals start failing (the database away for this worker)
        last_renewal = time.monotonic()
        store.down.set()
        # Then its processes, the detached one too, are gone before the lease runs out
        for pid in pids:
            assert wait_gone(pid, within=LEASE), f"process {pid} outlived its lease"
        assert time.monotonic() - last_renewal < LEASE + 0.5
        # And the attempt recorded no result: the step is still `running` at attempt 1
        # (for the reconciler to take back), not cancelled, failed or succeeded
        time.sleep(1.0)
        record = step(engine, run_id, "long")
        assert (record.status.value, record.attempts) == ("running", 1)
        assert engine.store.get_run(run_id).status == "running"
        # And its log says why it stopped
        eventually(
            lambda: any("lease" in line for line in log_text(engine, run_id, "long")),
            what="the fenced attempt's log line",
        )
    finally:
        reap(*pids)
