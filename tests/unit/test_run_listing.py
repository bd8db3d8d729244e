"""Listing runs a page at a time on every store: each run once, newest first, any filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import conveyor.orchestrator.store.sql as sql_store
import conveyor.orchestrator.testing.store as memory_store
from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.records import NewRun, RunRecord, StepSeed

SOURCE = "pipelines: {p: {steps: [{name: a, type: step.log, config: {message: hi}}]}}"
START = datetime(2026, 3, 1, 12, tzinfo=UTC)


def runs_created(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[RunRecord]:
    """Twenty-four runs of two pipelines, three at each moment, every fourth cancelled."""
    clock = [START]
    for module in (sql_store, memory_store):
        monkeypatch.setattr(module, "utcnow", lambda: clock[0])
    ids = []
    for i in range(24):
        clock[0] = START + timedelta(seconds=i // 3)  # ties: the id decides their order
        seeds = [StepSeed("s0", "step.log", "control")]
        new = NewRun(
            pipeline="ab"[i % 2], source=SOURCE, plan={"steps": []}, params={}, steps=seeds
        )
        ids.append(store.create_run(new).id)
    for run_id in ids[::4]:
        with store.transaction(run_id) as tx:
            tx.move_run(RunStatus.CANCELLED, error="stop")
    return [store.get_run(run_id) for run_id in ids]


def paged(store: Store, limit: int, filters: dict[str, str]) -> list[str]:
    """Every run the listing gives, following each page from the last run of the one before."""
    found: list[str] = []
    after = None
    status, pipeline = filters.get("status"), filters.get("pipeline")
    while True:
        page = store.list_runs(limit=limit, after=after, status=status, pipeline=pipeline)
        found += [r.id for r in page]
        if len(page) < limit:
            return found
        after = (page[-1].created_at, page[-1].id)


@pytest.mark.parametrize(
    "filters",
    [{}, {"status": "cancelled"}, {"pipeline": "a"}, {"pipeline": "b", "status": "running"}],
    ids=["all", "status", "pipeline", "both"],
)
def test_paging_with_filters_gives_each_run_once_newest_first(
    store: Store, monkeypatch: pytest.MonkeyPatch, filters: dict[str, str]
) -> None:
    # Given runs of two pipelines in two statuses, several created at the same moment
    created = runs_created(store, monkeypatch)
    wanted = [
        r
        for r in created
        if r.status == filters.get("status", r.status)
        and r.pipeline == filters.get("pipeline", r.pipeline)
    ]
    newest_first = sorted(wanted, key=lambda r: (r.created_at, r.id), reverse=True)

    # When every page is read, a few runs at a time
    found = paged(store, 4, filters)

    # Then each matching run comes exactly once, in order, across more than a page
    assert len(newest_first) > 4
    assert found == [r.id for r in newest_first]
