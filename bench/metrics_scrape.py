"""What a ``/metrics`` scrape costs at two sizes of history: it should not grow with it.

Fills a database with finished runs (ten steps each) at a small and a large history,
then times the scrape (the collector behind ``/metrics``, as Prometheus reads it) at
each, with a few live runs changing between scrapes. Printed with the ratio large /
small: flat is about 1x. For comparison it also times the old way, counting the steps
table on every scrape, whose ratio follows the history.

    python bench/metrics_scrape.py [--small 12000] [--large 120000] [--database-url URL]

Without ``--database-url`` it runs on a SQLite file; give it an empty Postgres database
to measure that.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from prometheus_client import generate_latest

from conveyor.api.metrics import registry_for
from conveyor.orchestrator.store import db
from conveyor.orchestrator.store.schema import definitions, metric_counts, runs, steps
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.stats import Stats

STEPS_PER_RUN = 10
MIGRATION = "0006_log_chunks_metric_counts.py"


def backfill() -> ModuleType:
    """The migration that counts what the tables hold (used after a bulk insert)."""
    path = db.MIGRATIONS / "versions" / MIGRATION
    spec = importlib.util.spec_from_file_location("backfill", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grow(store: SqlStore, total_steps: int) -> None:
    """Add finished runs until the history holds ``total_steps`` steps, and count them."""
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(steps)).scalar() or 0
        if not conn.execute(sa.select(definitions.c.id).where(definitions.c.id == "bench")).first():
            conn.execute(
                definitions.insert().values(
                    id="bench", name="bench", version=1, checksum="-", definition={}, created_at=now
                )
            )
        for start in range(have, total_steps, 10_000):
            count = min(10_000, total_steps - start) // STEPS_PER_RUN
            run_rows, step_rows = [], []
            for _ in range(count):
                run_id = str(uuid.uuid4())
                ended = now - timedelta(minutes=len(run_rows))
                run_rows.append(
                    {
                        "id": run_id,
                        "definition_id": "bench",
                        "pipeline": "bench",
                        "status": "succeeded",
                        "params": {},
                        "plan": {},
                        "event_seq": 0,
                        "created_at": ended - timedelta(seconds=30),
                        "updated_at": ended,
                        "completed_at": ended,
                    }
                )
                for i in range(STEPS_PER_RUN):
                    step_rows.append(
                        {
                            "id": str(uuid.uuid4()),
                            "instance_id": run_id,
                            "step_key": f"s{i}",
                            "position": i,
                            "type": "step.shell_exec",
                            "status": "succeeded" if i % 7 else "failed",
                            "attempts": 1,
                            "queue": "sandbox",
                            "started_at": ended - timedelta(seconds=i + 1),
                            "completed_at": ended,
                        }
                    )
            conn.execute(runs.insert(), run_rows)
            conn.execute(steps.insert(), step_rows)
        conn.execute(metric_counts.delete())
        backfill()._count_what_there_is(conn)


def scrape_seconds(store: SqlStore, repeat: int) -> float:
    """Median seconds of one scrape, with a run changing the counts before each."""
    registry = registry_for(Stats(store))
    times = []
    for _ in range(repeat):
        touch(store)
        start = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def touch(store: SqlStore) -> None:
    """A transition or two, as live runs make between scrapes."""
    run_id = store.list_runs(limit=1)[0].id
    with store.transaction(run_id) as tx:
        tx.changes.add(("run", "succeeded", "", "", ""), 0, 0.0)  # keep the run as it is
        tx.changes.add(("step", "queued", "step.shell_exec", "sandbox", ""), 1)
        tx.changes.add(("step", "queued", "step.shell_exec", "sandbox", ""), -1)


def old_scrape_seconds(store: SqlStore, repeat: int) -> float:
    """Median seconds of the old scrape: grouped counts over the whole steps table."""
    n = sa.func.count()
    queries = [
        sa.select(runs.c.status, n).group_by(runs.c.status),
        sa.select(steps.c.status, steps.c.type, steps.c.queue, n).group_by(
            steps.c.status, steps.c.type, steps.c.queue
        ),
        sa.select(steps.c.queue, n).where(steps.c.status == "queued").group_by(steps.c.queue),
        sa.select(steps.c.type, steps.c.queue, n)
        .where(steps.c.status.in_(("succeeded", "failed")), steps.c.started_at.is_not(None))
        .group_by(steps.c.type, steps.c.queue),
    ]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for query in queries:
            store.rows(query)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=12_000, help="steps in the small history")
    parser.add_argument("--large", type=int, default=120_000, help="steps in the large history")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = SqlStore(url)
        store.upgrade()
        try:
            found = {}
            for size in (args.small, args.large):
                grow(store, size)
                found[size] = (
                    scrape_seconds(store, args.repeat),
                    old_scrape_seconds(store, args.repeat),
                )
                new, old = found[size]
                print(f"{size:>8} steps: scrape {new * 1e3:7.2f} ms (old scan {old * 1e3:7.2f} ms)")
            (small_new, small_old), (large_new, large_old) = found[args.small], found[args.large]
            grown = args.large / args.small
            print(f"history x{grown:.0f}: scrape x{large_new / small_new:.2f}", end=", ")
            print(f"old scan x{large_old / small_old:.2f}")
        finally:
            store.close()


if __name__ == "__main__":
    main()
