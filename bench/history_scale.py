"""What the everyday reads cost on a nearly empty database and on one with a long history.

Creates a Postgres database of its own, measures it with a small history (60 runs, so
that a page of runs has as many rows to list as on the full one), fills it in bulk (INSERT
... SELECT generate_series through the schema's tables: by default 100,000 finished
runs of 10 steps, with their events and some log chunks, spread over four months),
and measures again in the same run. Printed for each (the best of ``--repeat``): small,
full and the ratio full / small (the target is at most 1.3x):

- the 200-step ``step.set`` chain, embedded on Postgres (ms per step);
- ``GET /api/v1/runs?limit=50`` through the Flask test client: the first page, the
  first page of one pipeline in one status, and a page 1,000 runs deep by cursor;
- ``GET /api/v1/metrics``;
- one reconciler pass (``Reconciler.run_once``);
- ``conveyor runs`` as a subprocess on the database (``CONVEYOR_DATABASE_URL``);
- ``find_run`` by an 8-character id prefix.

    python bench/history_scale.py [--runs 100000] [--repeat 15] [--explain]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

``--explain`` prints how each read the API, the CLI and the reconciler make scans the
full database (EXPLAIN ANALYZE, through the store's own statements). The
database is dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskClient

from conveyor.api import create_app
from conveyor.api.runs import encode_cursor
from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import db
from conveyor.orchestrator.store.retention import expirable_runs
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Tokens

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHAIN = 200
STEPS_PER_RUN = 10
#: The migration whose counting fills metric_counts from the tables after a bulk insert.
COUNTS_MIGRATION = "0006_log_chunks_metric_counts.py"

#: The history, in the order written. ``:runs`` runs, 100 s apart, ending five days ago;
#: one in 50 failed, one in 97 cancelled; twenty pipelines; a third kept no artifacts.
FILL = [
    "INSERT INTO workflow_definitions (id, name, version, checksum, definition, created_at)"
    " VALUES ('history', 'history', 1, '-', '{}', now()) ON CONFLICT DO NOTHING",
    """
    INSERT INTO workflow_instances (id, definition_id, pipeline, status, params, plan,
        submitted_by, event_seq, created_at, updated_at, completed_at, artifacts_expired_at,
        error, step_counts)
    SELECT md5('run' || :who || g)::uuid::text, 'history', 'pipe-' || (g % 20), s.status,
        '{"branch": "main"}', '{}', :who, 12, t.at, t.at + interval '40 s',
        t.at + interval '40 s', CASE WHEN g % 3 = 0 THEN t.at + interval '30 days' END,
        CASE WHEN s.status = 'failed' THEN 'step s9 failed' END,
        CASE WHEN s.status = 'succeeded' THEN '{"succeeded": 10}'::jsonb
             ELSE jsonb_build_object('succeeded', 9, s.status, 1) END
    FROM generate_series(1, :runs) AS g,
        LATERAL (SELECT now() - interval '5 days' - (:runs - g) * interval '100 s' AS at) t,
        LATERAL (SELECT CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'cancelled'
                 ELSE 'succeeded' END AS status) s
    """,
    """
    INSERT INTO workflow_steps (id, instance_id, step_key, position, type, status, attempts,
        queue, outputs, exit_code, started_at, completed_at, last_error)
    SELECT md5('step' || r.id || i)::uuid::text, r.id, 's' || i, i,
        CASE WHEN i % 2 = 0 THEN 'step.shell_exec' ELSE 'step.set' END,
        CASE WHEN i < 9 THEN 'succeeded' ELSE r.status END, 1,
        CASE WHEN i % 2 = 0 THEN 'sandbox' ELSE 'control' END,
        '{"x": "1"}', CASE WHEN i % 2 = 0 THEN 0 END,
        r.created_at + i * interval '3 s', r.created_at + (i + 1) * interval '3 s',
        CASE WHEN i = 9 AND r.status = 'failed' THEN 'exit 1' END
    FROM workflow_instances r CROSS JOIN generate_series(0, 9) AS i
    WHERE r.definition_id = 'history' AND r.submitted_by = :who
    """,
    """
    INSERT INTO workflow_events (instance_id, seq, step_key, type, payload, created_at)
    SELECT r.id, e.seq,
        CASE WHEN e.seq BETWEEN 2 AND 11 THEN 's' || (e.seq - 2) END,
        CASE WHEN e.seq = 1 THEN 'run.created' WHEN e.seq = 12 THEN 'run.' || r.status
             ELSE 'step.succeeded' END,
        '{}', r.created_at + e.seq * interval '3 s'
    FROM workflow_instances r CROSS JOIN generate_series(1, 12) AS e(seq)
    WHERE r.definition_id = 'history' AND r.submitted_by = :who
    """,
    """
    INSERT INTO step_log_chunks (instance_id, step_key, attempt, first_line, last_line,
        bytes, total_bytes, lines, created_at)
    SELECT r.id, 's0', 1, 1, 20, 400, 400, repeat(E'stdout\\tbuilding something\\n', 20),
        r.created_at
    FROM workflow_instances r WHERE r.definition_id = 'history' AND r.submitted_by = :who
    """,
    "DELETE FROM metric_changes",
    "DELETE FROM metric_counts",
]


@contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    """A new, empty Postgres database for this run, dropped afterwards."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"conveyor_history_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def counting_migration() -> ModuleType:
    """The migration that counts what the tables hold (used after the bulk insert)."""
    path = db.MIGRATIONS / "versions" / COUNTS_MIGRATION
    spec = importlib.util.spec_from_file_location("counts", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Runs in the small history that the full one is compared with: a whole page to list.
SMALL = 60


def fill(url: str, runs: int, who: str = "bench") -> float:
    """Write the history in bulk, count it for /metrics, analyse; seconds it took."""
    start = time.perf_counter()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in FILL:
            conn.execute(sa.text(statement), {"runs": runs, "who": who})
        counting_migration()._count_what_there_is(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        # Write the fill's dirty pages out now, not while the reads are being timed.
        conn.exec_driver_sql("CHECKPOINT")
    engine.dispose()
    return time.perf_counter() - start


def best_seconds(work: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``work``, after one to warm up.

    The best, not the median: on a shared machine it is the call least disturbed by the
    rest, and what this compares is the work itself on the two databases.
    """
    work()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def chain_source(steps: int) -> str:
    lines = [
        f"      - {{name: s{i}, type: step.set, config: {{values: {{x: '1'}}}}}}"
        for i in range(steps)
    ]
    return "pipelines:\n  chain:\n    steps:\n" + "\n".join(lines) + "\n"


class Bench:
    """The measures, taken the same way on the empty and on the full database."""

    def __init__(self, url: str, root: Path, repeat: int) -> None:
        self.url, self.root, self.repeat = url, root, repeat
        self.settings = Settings(data_dir=root / "engine", database_url=url)
        self.engine = EmbeddedEngine(self.settings)
        self.client: FlaskClient = create_app(self.settings, core=self.engine.core).test_client()
        _, secret = Tokens(self.engine.store).create("bench", "viewer")
        self.headers = {"Authorization": f"Bearer {secret}"}

    def close(self) -> None:
        self.engine.close()

    def measure(self) -> dict[str, float]:
        """Every figure, in milliseconds (per step for the chain)."""
        store: SqlStore = self.engine.store
        chain = self.chain()  # first: the runs it makes are there to list on an empty database
        runs = store.list_runs(limit=1001)
        deep = encode_cursor(runs[-1]) if len(runs) > 1000 else ""
        prefix = runs[len(runs) // 2].id[:8]
        repeat = self.repeat
        return {
            "chain of 200 step.set, ms/step": chain * 1000 / CHAIN,
            "GET /runs?limit=50": self.get("/api/v1/runs?limit=50") * 1000,
            "GET /runs?limit=50, status+pipeline": self.get(
                "/api/v1/runs?limit=50&status=failed&pipeline=pipe-10"
            )
            * 1000,
            "GET /runs?limit=50, 1,000 runs deep": self.get(
                f"/api/v1/runs?limit=50&cursor={deep}" if deep else "/api/v1/runs?limit=50"
            )
            * 1000,
            "GET /metrics": self.get("/api/v1/metrics") * 1000,
            "reconciler pass": best_seconds(self.engine.core.reconciler.run_once, repeat) * 1000,
            "find_run by 8-char prefix": best_seconds(lambda: store.find_run(prefix), repeat)
            * 1000,
            "conveyor runs (subprocess)": self.cli() * 1000,
        }

    def chain(self) -> float:
        """Best seconds of the 200-step chain, submit to finish."""
        compiled = self.engine.compile(chain_source(CHAIN))

        def once() -> None:
            run = self.engine.start(compiled.select(None), compiled.source)
            final = self.engine.wait(run.id)
            assert final.status == "succeeded", final.error

        return best_seconds(once, 3)

    def get(self, path: str) -> float:
        def once() -> None:
            answer = self.client.get(path, headers=self.headers)
            assert answer.status_code == 200, answer.get_data(as_text=True)

        return best_seconds(once, self.repeat)

    def cli(self) -> float:
        """Best seconds of ``conveyor runs`` on the database, start to exit."""
        conveyor = Path(sys.executable).parent / "conveyor"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env |= {"CONVEYOR_DATABASE_URL": self.url, "CONVEYOR_DATA_DIR": str(self.root / "cli")}

        def once() -> None:
            done = subprocess.run(
                [str(conveyor), "runs"], check=False, env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr.strip() or f"exit {done.returncode}")

        try:
            return best_seconds(once, max(3, self.repeat // 3))
        except RuntimeError as exc:
            print(f"conveyor runs failed: {exc}", file=sys.stderr)
            return float("nan")


def explain(url: str) -> None:
    """The plans of the reads that must not grow with history, on the full database.

    Each read runs through the store as the code makes it; its statements are captured
    and explained with the same parameters. Only the plan's lines naming a scan print.
    """
    store = SqlStore(url)
    now = datetime.now(UTC)
    some = store.list_runs(limit=1)[0]
    reads: dict[str, Callable[[], object]] = {
        "runs page": lambda: store.list_runs(limit=51),
        "runs page by status+pipeline": lambda: store.list_runs(
            limit=51, status="failed", pipeline="pipe-10"
        ),
        "runs page 1,000 deep": lambda: store.list_runs(
            limit=51, after=(now - timedelta(days=6), some.id)
        ),
        "run by id prefix": lambda: store.find_run(some.id[:8]),
        "previous run of a pipeline": lambda: store.latest_run_id("pipe-3", "succeeded"),
        "overdue runs": lambda: store.overdue_runs(now),
        "stale queued steps": lambda: store.stale_queued(now),
        "expired leases": lambda: store.expired_leases(now),
        "stalled runs": lambda: store.stalled_runs(now),
        "retention: runs to expire": lambda: expirable_runs(store, now, limit=100),
        "a run's events": lambda: store.list_events(some.id),
    }
    try:
        for name, read in reads.items():
            print(f"-- {name}")
            for statement, parameters in captured(store, read):
                print("\n".join(f"   {line}" for line in plan_of(store, statement, parameters)))
    finally:
        store.close()


def captured(store: SqlStore, read: Callable[[], object]) -> list[tuple[str, Any]]:
    """The (statement, parameters) a read sends to the database."""
    found: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            found.append((statement, parameters))

    sa.event.listen(store.read_engine, "before_cursor_execute", note)
    try:
        read()
    finally:
        sa.event.remove(store.read_engine, "before_cursor_execute", note)
    return found


def plan_of(store: SqlStore, statement: str, parameters: Any) -> list[str]:
    """The lines of EXPLAIN ANALYZE that say how each table was read, and the time."""
    with store.read_engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + statement, parameters)
        lines = [row[0] for row in cursor.fetchall()]
    keep = ("Scan", "Execution Time", "Rows Removed")
    return [line.strip() for line in lines if any(word in line for word in keep)]


def report(empty: dict[str, float], full: dict[str, float]) -> None:
    print(f"{'measure':<40} {'small':>10} {'full':>10} {'full/small':>11}")
    for name, before in empty.items():
        after = full[name]
        print(f"{name:<40} {before:>10.2f} {after:>10.2f} {after / before:>10.2f}x")
    print("target: every ratio <= 1.3x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the history")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    with own_database(args.admin_url) as url, tempfile.TemporaryDirectory() as tmp:
        db.upgrade(sa.create_engine(url))
        bench = Bench(url, Path(tmp), args.repeat)
        try:
            # A page of runs to list (as many as on the full database), and little else.
            fill(url, SMALL, who="small")
            empty = bench.measure()
            took = fill(url, args.runs)
            print(f"history: {args.runs} runs, {args.runs * STEPS_PER_RUN} steps ({took:.0f} s)")
            full = bench.measure()
        finally:
            bench.close()
        report(empty, full)
        if args.explain:
            explain(url)


if __name__ == "__main__":
    main()
