"""Distributed overhead: Conveyor's steps through Celery and Postgres against raw Celery.

Both sides run on this machine's Redis, with 2 worker processes each (``-c 1`` unless
``--concurrency`` says otherwise) and the same reliability settings (acks_late,
prefetch 1), in the same run of this script:

- chain: raw Celery's hop is ``noop.delay().get()`` in a loop; Conveyor's is a
  200-step chain of ``step.set`` (no subprocess), timed from submit to the run's end,
  with p99 from the gaps between the steps' ``step.succeeded`` events.
- throughput: 2,000 raw no-op tasks sent at once (and their results read) against
  200 runs x 10 independent ``step.set`` steps submitted at once. ``step.set`` is
  brief, so a run's ten ride one message (see ``Runtime``).
- commands: 2,000 raw tasks that each run ``sh -c true`` against 200 runs x 10
  ``step.shell_exec`` steps running ``true`` in the local sandbox: steps that are not
  brief, with a message, a claim and a result each.
- commits per step: COMMITs counted by SQLAlchemy on the workers' own code path
  (submit, claim, result) run in this process; and, for the record,
  ``pg_stat_database.xact_commit`` over the throughput phase, which also counts the
  pool's pre-ping of every checkout and this script's polling.
- worker RSS: of each worker's pool process, sampled every 2,000 steps of a long series.

Runs are submitted with ``Runtime.submit`` and a ``CeleryDispatcher``, as the API does.
Targets (issue 3): chain <= 2x the raw hop per step, p99 < 10 ms, throughput >= 0.7x
raw, <= 3 commits per step, flat RSS. Printed, never asserted.

    python bench/distributed_throughput.py [--chain 200] [--runs 200] [--long 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
import sqlalchemy as sa
from celery import Celery

from conveyor.orchestrator.engine import Runtime
from conveyor.orchestrator.pipeline import Compiled, Compiler
from conveyor.orchestrator.plugins import StepTypes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher
from conveyor.workers.app import make_celery
from conveyor.workers.dispatcher import CeleryDispatcher
from conveyor.workers.process import WorkerProcess

QUIET = ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
TERMINAL = ("succeeded", "failed", "cancelled")


# -- raw Celery ------------------------------------------------------------------------


def baseline_app(redis_url: str) -> Celery:
    """Raw Celery with a no-op task, on the settings Conveyor uses."""
    app = Celery("baseline", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue="baseline",
        broker_connection_retry_on_startup=True,
    )
    app.task(name="baseline.noop")(_noop)
    app.task(name="baseline.sh")(_sh_true)
    return app


def _noop() -> None:
    return None


def _sh_true() -> None:
    subprocess.run(["sh", "-c", "true"], check=True)


def throughput(task: Any, total: int) -> float:
    """Tasks per second of ``total`` tasks sent at once, their results read."""
    start = time.perf_counter()
    results = [task.delay() for _ in range(total)]
    for result in results:
        result.get(timeout=120)
    return total / (time.perf_counter() - start)


def measure_baseline(redis_url: str, chain: int, total: int) -> dict[str, float]:
    """Per-hop times of ``delay().get()`` and the throughput of ``total`` tasks."""
    app = baseline_app(redis_url)
    noop = app.tasks["baseline.noop"]
    for _ in range(50):  # warm both workers and the connections
        noop.delay().get(timeout=30)
    hops = []
    for _ in range(chain):
        start = time.perf_counter()
        noop.delay().get(timeout=30)
        hops.append(time.perf_counter() - start)
    sh = app.tasks["baseline.sh"]
    throughput(sh, 50)  # warm
    return {
        "hop": statistics.mean(hops),
        "p99": percentile(hops, 99),
        "throughput": throughput(noop, total),
        "commands": throughput(sh, total),
    }


# -- Conveyor --------------------------------------------------------------------------


def chain_pipeline(steps: int) -> str:
    """A pipeline of ``steps`` no-op steps, each after the previous one."""
    lines = [
        f"      - {{name: s{i}, type: step.set, config: {{values: {{x: '1'}}}}}}"
        for i in range(steps)
    ]
    return "pipelines:\n  chain:\n    steps:\n" + "\n".join(lines) + "\n"


def fan_pipeline(steps: int) -> str:
    """A pipeline of ``steps`` independent no-op steps."""
    lines = [
        f"      - {{name: s{i}, type: step.set, needs: [], config: {{values: {{x: '1'}}}}}}"
        for i in range(steps)
    ]
    return "pipelines:\n  fan:\n    steps:\n" + "\n".join(lines) + "\n"


def command_pipeline(steps: int) -> str:
    """A pipeline of ``steps`` independent steps that each run ``true``."""
    lines = [
        f"      - {{name: s{i}, type: step.shell_exec, needs: [], config: {{commands: ['true']}}}}"
        for i in range(steps)
    ]
    return "pipelines:\n  commands:\n    steps:\n" + "\n".join(lines) + "\n"


@dataclass
class Conveyor:
    """The bench process's side: a runtime that submits as the API does."""

    settings: Settings

    def __post_init__(self) -> None:
        self.store = SqlStore(self.settings.resolved_database_url)
        self.compiler = Compiler.for_settings(self.settings, StepTypes())
        self.dispatcher = CeleryDispatcher(make_celery(self.settings))
        self.runtime = Runtime(self.store, self.compiler.templates, self.dispatcher)
        self._compiled: dict[str, Compiled] = {}

    def submit(self, text: str) -> str:
        """Start a run of the file's only pipeline; its id (each file is compiled once)."""
        if text not in self._compiled:
            self._compiled[text] = self.compiler.compile(text)
        compiled = self._compiled[text]
        return self.runtime.submit(compiled.select(None), compiled.source, {}).id

    def wait(self, run_ids: list[str], timeout: float = 600) -> None:
        """Block until every run is over; fail loudly if one did not succeed."""
        pending, until = set(run_ids), time.monotonic() + timeout
        while pending:
            if time.monotonic() > until:
                raise SystemExit(f"{len(pending)} runs not done after {timeout}s")
            # Only the runs still awaited: the poll must not cost more as runs pile up.
            with self.store.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT id, status, error FROM workflow_instances"
                    " WHERE id = ANY(%s) AND status = ANY(%s)",
                    (list(pending), list(TERMINAL)),
                ).all()
            for run_id, status, error in rows:
                if run_id in pending and status != "succeeded":
                    raise SystemExit(f"run {run_id} {status}: {error}")
            pending -= {r[0] for r in rows}
            time.sleep(0.02)

    def chain(self, steps: int) -> dict[str, float]:
        """Per-step time and p99 gap of one chain of ``steps`` steps."""
        text = chain_pipeline(steps)
        start = time.perf_counter()
        run_id = self.submit(text)
        self.wait([run_id])
        elapsed = time.perf_counter() - start
        done = [e.created_at for e in self.store.list_events(run_id) if e.type == "step.succeeded"]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(done)]
        return {"step": elapsed / steps, "p99": percentile(gaps, 99)}

    def fan(self, runs: int, width: int, text: str | None = None) -> dict[str, float]:
        """Steps per second of ``runs`` runs of ``width`` independent steps."""
        text = text or fan_pipeline(width)
        start = time.perf_counter()
        ids = [self.submit(text) for _ in range(runs)]
        self.wait(ids)
        return {"throughput": runs * width / (time.perf_counter() - start)}


def exact_commits(settings: Settings, width: int, text: str, runs: int = 20) -> float:
    """Commits per step on the workers' own code path, counted by SQLAlchemy.

    The WorkerProcess a worker builds, fed in this process without a broker: each run
    is submitted, then every step it dispatched is run; COMMITs on its engine are
    counted. Postgres's own counter also sees each pooled connection's pre-ping.
    """
    process = WorkerProcess.build(make_celery(settings), settings, "bench:0", None)
    collect = MemoryDispatcher()
    process.runtime.dispatcher = collect
    compiled = Compiler.for_settings(settings, StepTypes()).compile(text)
    count = [0]
    sa.event.listen(
        process.store.engine, "commit", lambda _conn: count.__setitem__(0, count[0] + 1)
    )
    try:
        for _ in range(runs):
            process.runtime.submit(compiled.select(None), compiled.source, {})
            while collect.sent:
                process.run_step(collect.sent.pop()[0])
    finally:
        process.close()
    return count[0] / (runs * width)


# -- the database, workers and measurements ---------------------------------------------


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated Postgres database, dropped afterwards."""
    name = f"conveyor_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    store = SqlStore(url)
    store.upgrade()
    store.close()
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker process in a group of its own, logging to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(app: Celery, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until every worker answers a ping (or exit if one died)."""
    until = time.monotonic() + timeout
    while len(app.control.ping(timeout=0.5)) < len(procs):
        if time.monotonic() > until or any(p.poll() is not None for p in procs):
            raise SystemExit(f"workers did not start: {[p.args for p in procs]}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill each worker's whole process group."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def pool_children(proc: subprocess.Popen[bytes]) -> list[int]:
    """Pids of the worker's pool processes (its group, less itself)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != proc.pid:
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == proc.pid:
                    found.append(int(entry.name))
    return found


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def settled_count(url: str, query: str) -> int:
    """The one number ``query`` reads from the statistics views, every session's counted.

    A backend flushes its counters only now and then while it lives; ending the other
    sessions (the workers reconnect on their next use) makes every count visible.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        time.sleep(1.0)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def commits(url: str) -> int:
    """Transactions committed in the database so far, every session's counted."""
    return settled_count(
        url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def worker_env(db_url: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    """The workers' environment: nothing ``CONVEYOR_*`` from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_DATABASE_URL=db_url,
        CONVEYOR_BROKER_URL=redis_url,
        CONVEYOR_DATA_DIR=str(data_dir),
    )
    return env


def run_baseline(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Start 2 raw Celery workers, measure, stop them."""
    argv = [sys.executable, __file__, "--redis", args.redis, "-c", str(args.concurrency)]
    argv += ["--serve-baseline"]
    procs = [start([*argv, f"b{i}"], dict(os.environ), tmp / f"b{i}.log") for i in range(2)]
    try:
        wait_ready(baseline_app(args.redis), procs)
        return measure_baseline(args.redis, args.chain, args.runs * args.width)
    finally:
        stop(procs)


def run_conveyor(args: argparse.Namespace, db_url: str, tmp: Path) -> dict[str, Any]:
    """Start 2 Conveyor workers, measure chain, throughput, commits and RSS."""
    env = worker_env(db_url, args.redis, tmp / "data")
    argv = [sys.executable, "-m", "conveyor", "worker", "-Q", "control,sandbox"]
    argv += ["-c", str(args.concurrency)]
    procs = [start([*argv, "-n", f"c{i}@%h", *QUIET], env, tmp / f"c{i}.log") for i in range(2)]
    side = Conveyor(Settings(database_url=db_url, broker_url=args.redis, data_dir=tmp / "data"))
    try:
        wait_ready(side.dispatcher.app, procs)
        side.fan(10, args.width)  # warm both workers (their composition, plans, pools)
        side.chain(20)
        out: dict[str, Any] = dict(side.chain(args.chain))
        before = commits(db_url)
        out.update(side.fan(args.runs, args.width))
        out["pg_commits"] = (commits(db_url) - before) / (args.runs * args.width)
        commands = command_pipeline(args.width)
        side.fan(10, args.width, commands)  # warm
        out["commands"] = side.fan(args.runs, args.width, commands)["throughput"]
        out["commits"] = exact_commits(side.settings, args.width, fan_pipeline(args.width))
        out["command_commits"] = exact_commits(side.settings, args.width, commands)
        out["rss"] = long_run(side, procs, args)
        return out
    finally:
        side.dispatcher.close()
        side.store.close()
        stop(procs)


def long_run(
    side: Conveyor, procs: list[subprocess.Popen[bytes]], args: argparse.Namespace
) -> list[list[float]]:
    """RSS (MiB) of each worker's pool processes after every 2,000 steps of ``args.long``."""
    children = [pid for proc in procs for pid in pool_children(proc)]
    samples = [[rss_mib(pid) for pid in children]]
    done = 0
    while done < args.long:
        side.fan(2000 // args.width, args.width)
        done += 2000
        samples.append([rss_mib(pid) for pid in children])
    return samples


def report(raw: dict[str, float], ours: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the figures and their ratios against the targets."""
    hop, step = raw["hop"] * 1000, ours["step"] * 1000
    ratio = ours["throughput"] / raw["throughput"]
    rows = [
        ("raw Celery hop, delay().get()", f"{hop:.2f} ms/step, p99 {raw['p99'] * 1000:.2f} ms"),
        (
            f"Conveyor {args.chain}-step chain",
            f"{step:.2f} ms/step, p99 {ours['p99'] * 1000:.2f} ms",
        ),
        ("  ratio chain / raw hop", f"{step / hop:.2f}x (target <= 2x, p99 < 10 ms)"),
        (f"raw Celery, {args.runs * args.width} no-op tasks", f"{raw['throughput']:.0f} tasks/s"),
        (f"Conveyor, {args.runs} runs x {args.width}", f"{ours['throughput']:.0f} steps/s"),
        ("  ratio Conveyor / raw throughput", f"{ratio:.2f}x (target >= 0.7x)"),
        (
            f"raw Celery, {args.runs * args.width} tasks running sh",
            f"{raw['commands']:.0f} tasks/s",
        ),
        (f"Conveyor, {args.runs} runs x {args.width} true", f"{ours['commands']:.0f} steps/s"),
        (
            "  ratio for steps that run a command",
            f"{ours['commands'] / raw['commands']:.2f}x (a message and a claim each)",
        ),
        (
            "database commits per step",
            f"{ours['commits']:.2f} brief, {ours['command_commits']:.2f} commands (target <= 3)",
        ),
        ("  xact_commit per step in pg_stat", f"{ours['pg_commits']:.2f} (pre-pings, polling too)"),
    ]
    first, last = ours["rss"][0], ours["rss"][-1]
    for index, (a, b) in enumerate(zip(first, last, strict=False)):
        rows.append((f"worker {index} pool RSS, {args.long} steps", f"{a:.1f} -> {b:.1f} MiB"))
    for label, value in rows:
        print(f"{label:<40} {value}")
    print("RSS samples every 2,000 steps (MiB):", [[round(x, 1) for x in s] for s in ours["rss"]])


def serve_baseline(redis_url: str, name: str, concurrency: int) -> None:
    """Run one raw Celery worker (this script, re-invoked)."""
    baseline_app(redis_url).worker_main(
        ["worker", "-Q", "baseline", "-c", str(concurrency), "-n", f"{name}@%h", *QUIET]
    )


def service_options(parser: argparse.ArgumentParser, *, redis_db: int) -> None:
    """``--redis`` (a database index of its own per bench, flushed first) and
    ``--postgres`` (an admin URL), for every bench that starts workers."""
    parser.add_argument(
        "--redis", default=f"redis://127.0.0.1:6379/{redis_db}", help="flushed first"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CONVEYOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL: the bench creates and drops a database of its own",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chain", type=int, default=200, help="steps in the chain")
    parser.add_argument("--runs", type=int, default=200, help="runs in the throughput phase")
    parser.add_argument("--width", type=int, default=10, help="independent steps per run")
    parser.add_argument("--long", type=int, default=10_000, help="steps of the RSS run")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="pool size per worker")
    service_options(parser, redis_db=10)
    parser.add_argument("--serve-baseline", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.redis, args.serve_baseline, args.concurrency)
        return
    redis.Redis.from_url(args.redis).flushdb()
    with bench_database(args.postgres) as db_url, tempfile.TemporaryDirectory() as tmp:
        raw = run_baseline(args, Path(tmp))
        ours = run_conveyor(args, db_url, Path(tmp))
    report(raw, ours, args)


if __name__ == "__main__":
    main()
