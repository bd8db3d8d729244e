"""Per-step overhead against run size: chains and fan-outs of 10 to 10,000 ``step.set`` steps.

A step's cost must not grow with the run it is in: nothing done per step may read or
write the whole run. For each shape (a chain, each step after the previous one; a
fan-out, every step independent) and each size, one run is timed from submit to its
end, and the per-step time printed with the ratio of the largest to the smallest
(target: within 1.3x of each other):

- embedded: an ``EmbeddedEngine`` on SQLite, as ``conveyor run`` does; with the SQL
  statements per step, counted by SQLAlchemy on the engine's store.
- distributed: 2 ``conveyor worker`` processes on Postgres and Redis, submitted as the
  API does (the helpers of ``distributed_throughput.py``); with the rows of
  ``workflow_steps`` read per step (``pg_stat_user_tables``: sequential and index
  fetches, every session's counted).

    python bench/run_size.py [--sizes 10,100,1000,10000] [--skip-distributed]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis
import sqlalchemy as sa

# Run as a script: this directory is on the path, so its sibling imports as a module.
from distributed_throughput import (  # type: ignore[import-not-found]
    QUIET,
    Conveyor,
    bench_database,
    chain_pipeline,
    fan_pipeline,
    service_options,
    settled_count,
    start,
    stop,
    wait_ready,
    worker_env,
)

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings

SHAPES: dict[str, Callable[[int], str]] = {"chain": chain_pipeline, "fan": fan_pipeline}


# -- embedded ----------------------------------------------------------------------------


def embedded(shape: str, size: int, data_dir: Path) -> tuple[float, float]:
    """(seconds per step, SQL statements per step) of one embedded run."""
    engine = EmbeddedEngine(Settings(data_dir=data_dir, max_steps=max(size, 1000)))
    statements = [0]

    def count(*_: object) -> None:
        statements[0] += 1

    try:
        warm = engine.compile(SHAPES[shape](10))
        engine.wait(engine.start(warm.select(None), warm.source).id)
        compiled = engine.compile(SHAPES[shape](size))
        sa.event.listen(engine.store.engine, "before_cursor_execute", count)
        begin = time.perf_counter()
        run = engine.start(compiled.select(None), compiled.source)
        final = engine.wait(run.id)
        elapsed = time.perf_counter() - begin
        sa.event.remove(engine.store.engine, "before_cursor_execute", count)
        assert final.status == "succeeded", final.error
        return elapsed / size, statements[0] / size
    finally:
        engine.close()


# -- distributed -------------------------------------------------------------------------


def steps_rows_read(url: str) -> int:
    """Rows of ``workflow_steps`` read so far (sequential and by index), every session's."""
    return settled_count(
        url,
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_user_tables WHERE relname = 'workflow_steps'",
    )


def analyze(url: str) -> None:
    """Statistics for the planner, as autovacuum keeps them on any database in use.

    A table never analyzed gives every index the same cost, and Postgres may then walk
    the status index for a step it could find by its key.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def distributed(args: argparse.Namespace, sizes: list[int]) -> dict[tuple[str, int], tuple]:
    """{(shape, size): (seconds per step, rows read per step)} on 2 real workers."""
    out: dict[tuple[str, int], tuple] = {}
    redis.Redis.from_url(args.redis).flushdb()
    with bench_database(args.postgres) as db_url, tempfile.TemporaryDirectory() as tmp:
        env = worker_env(db_url, args.redis, Path(tmp) / "data")
        argv = [sys.executable, "-m", "conveyor", "worker", "-Q", "control,sandbox", "-c", "1"]
        procs = [
            start([*argv, "-n", f"s{i}@%h", *QUIET], env, Path(tmp) / f"s{i}.log") for i in range(2)
        ]
        settings = Settings(
            database_url=db_url, broker_url=args.redis, data_dir=tmp, max_steps=max(sizes)
        )
        side = Conveyor(settings)
        try:
            wait_ready(side.dispatcher.app, procs)
            side.fan(10, 10)  # warm both workers (their composition, plans, pools)
            side.chain(20)
            analyze(db_url)
            for shape, pipeline in SHAPES.items():
                for size in sizes:
                    before = steps_rows_read(db_url)
                    text = pipeline(size)
                    begin = time.perf_counter()
                    side.wait([side.submit(text)])
                    elapsed = time.perf_counter() - begin
                    rows = steps_rows_read(db_url) - before
                    out[shape, size] = (elapsed / size, rows / size)
                    progress("distributed", shape, size, out[shape, size])
        finally:
            side.dispatcher.close()
            side.store.close()
            stop(procs)
    return out


# -- report ------------------------------------------------------------------------------


def progress(where: str, shape: str, size: int, figure: tuple[float, float]) -> None:
    """One figure as soon as it is measured (on stderr; the table comes at the end)."""
    print(f"{where} {shape} {size}: {figure[0] * 1000:.2f} ms, {figure[1]:.1f}", file=sys.stderr)


def report(title: str, unit: str, figures: dict[tuple[str, int], tuple]) -> None:
    """Per-step times by shape and size, the ratio max/min, and the second figure."""
    print(f"\n{title}")
    for shape in SHAPES:
        found = {n: v for (s, n), v in figures.items() if s == shape}
        if not found:
            continue
        cells = "  ".join(
            f"{n:>6}: {t * 1000:6.2f} ms ({extra:6.1f} {unit})" for n, (t, extra) in found.items()
        )
        times = [t for t, _ in found.values()]
        print(f"  {shape:<6} {cells}")
        ratio = max(times) / min(times)
        print(f"  {'':<6} ratio max/min per-step time: {ratio:.2f}x (target <= 1.3x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000,10000", help="steps per run")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-distributed", action="store_true")
    service_options(parser, redis_db=11)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if not args.skip_embedded:
        with tempfile.TemporaryDirectory() as tmp:
            figures = {}
            for shape in SHAPES:
                for n in sizes:
                    figures[shape, n] = embedded(shape, n, Path(tmp) / f"{shape}{n}")
                    progress("embedded", shape, n, figures[shape, n])
        report("embedded (SQLite), per step:", "statements", figures)
    if not args.skip_distributed:
        figures = distributed(args, sizes)
        report("distributed (Postgres, 2 workers), per step:", "rows read", figures)


if __name__ == "__main__":
    main()
