"""Artifact retention on the real Postgres: the sweep's queries, locks and events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conveyor.orchestrator.artifacts.retention import ArtifactRetention, expiry
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.engine.recovery import Reconciler
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher
from conveyor.providers.local import LocalArtifactStore
from tests.unit.runtime_kit import FAIL, A, Harness, pipeline

DAY = timedelta(days=1)


def test_the_reconciler_expires_finished_runs_artifacts_on_postgres(
    pg_store: SqlStore, settings: Settings, tmp_path: Path
) -> None:
    """Given on Postgres a succeeded run keeping artifacts 1 day, a failed run under the
    operator's 3-day default, a `forever` run and a run still going,
    when the reconciler passes two days later,
    then only the first run's artifacts go, once, with an event; the rest stay."""
    recorder = MemoryDispatcher()
    h = Harness(Runtime(pg_store, TemplateEngine(), recorder), recorder, pg_store)
    artifacts = LocalArtifactStore(settings)
    source = tmp_path / "f"
    source.write_bytes(b"data")

    def started(extra: str = "", script: dict | None = None, drive: bool = True) -> str:  # type: ignore[type-arg]
        run_id = h.start(pipeline(A, extra=extra))
        if drive:
            h.drive(run_id, script or {})
        artifacts.put(run_id, "out.tar", source)
        return run_id

    day = started("    artifacts: {retention: 1d}\n")
    default = started(script={"a": [FAIL]})
    forever = started("    artifacts: {retention: forever}\n")
    going = started("    artifacts: {retention: 0s}\n", drive=False)
    retention = ArtifactRetention(pg_store, lambda: artifacts, 3 * 86400.0)
    reconciler = Reconciler(h.runtime, retention=retention, stale_after=10**9)

    report = reconciler.run_once(utcnow() + 2 * DAY)

    assert report.expired_artifacts == 1
    assert artifacts.list(day) == []
    assert [len(artifacts.list(r)) for r in (default, forever, going)] == [1, 1, 1]
    found = expiry(pg_store, day)
    assert found is not None and (found.count, found.retention) == (1, 86400.0)
    assert retention.sweep(utcnow() + 2 * DAY) == 0  # the second sweep does nothing

    assert retention.sweep(utcnow() + 4 * DAY) == 1
    assert artifacts.list(default) == [] and len(artifacts.list(forever)) == 1
    assert len(artifacts.list(going)) == 1
    events = [e.type for e in pg_store.list_events(day)]
    assert events.count("artifacts.expired") == 1
