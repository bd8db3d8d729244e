"""Conveyor against a peer: Prefect in its own local (ephemeral) mode, in the same run.

Two measures, each on both sides, warm-up runs left out, medians of ``--rounds``:

- latency: a chain of 200 tasks, each depending on the previous one, timed from the
  call to the end; per-task time. Prefect's flow calls its task directly (the
  cheapest way it has to run one task after another); Conveyor's pipeline is a chain
  of ``step.set`` steps.
- throughput: 2,000 independent no-op tasks. Prefect's flow submits them at once to its
  default task runner and waits for them all; Conveyor runs 200 runs x 10 independent
  ``step.set`` steps, all submitted at once.

Conveyor is measured embedded (an ``EmbeddedEngine``, the ``conveyor run`` path, as
``embedded_overhead.py`` does) and distributed (two ``conveyor worker`` processes on
this machine's Postgres and Redis, started with ``distributed_throughput.py``'s helpers).
Goals (issue 11): at most 0.15x Prefect's per-task latency and at least 25x its
throughput, embedded and distributed. Printed, never asserted.

Prefect is not a dependency of Conveyor: it runs in an interpreter of its own, given by
``--prefect-python`` (the current one if it can import ``prefect``), with
``PREFECT_HOME`` in a temporary directory so nothing of the user's is read or written.
Such an interpreter, outside the repository:

    python3 -m venv ~/prefect-venv && ~/prefect-venv/bin/pip install prefect==3.9.1
    python bench/prefect_peer.py --prefect-python ~/prefect-venv/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from distributed_throughput import (
    QUIET,
    Conveyor,
    bench_database,
    chain_pipeline,
    fan_pipeline,
    service_options,
    start,
    stop,
    wait_ready,
    worker_env,
)

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.pipeline import Compiled
from conveyor.orchestrator.settings import Settings

#: Run in the Prefect interpreter: ``python -c PREFECT_SCRIPT CONFIG_JSON RESULT_PATH``.
PREFECT_SCRIPT = r"""
import json, sys, time
from prefect import flow, task

config = json.loads(sys.argv[1])

@task
def step(x: int) -> int:
    return x + 1

@task
def noop(i: int) -> None:
    return None

@flow(name="bench-chain")
def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = step(x)
    return x

@flow(name="bench-fan")
def fan(n: int) -> None:
    noop.map(range(n)).wait()

def timed(work, n):
    # A round the temporary server fails (a 503 while its SQLite is busy) runs again;
    # the failures are counted and printed.
    for _ in range(3):
        try:
            start = time.perf_counter()
            work(n)
            return time.perf_counter() - start
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:300])
    raise SystemExit("Prefect failed the same round three times: " + failures[-1])

failures = []
chain(10), fan(100)  # warm-up: the ephemeral server starts, imports and caches fill
result = {
    "chain": [timed(chain, config["chain"]) for _ in range(config["rounds"])],
    "fan": [timed(fan, config["tasks"]) for _ in range(config["rounds"])],
    "failures": failures,
}
with open(sys.argv[2], "w") as out:
    json.dump(result, out)
"""

HOW_TO = """no Python with Prefect found: pass --prefect-python, for instance after
    python3 -m venv ~/prefect-venv
    ~/prefect-venv/bin/pip install prefect==3.9.1
    python bench/prefect_peer.py --prefect-python ~/prefect-venv/bin/python
(keep Prefect out of Conveyor's own virtualenv and dependencies)"""


# -- Prefect -----------------------------------------------------------------------------


def prefect_python(given: str | None) -> str:
    """The interpreter to run Prefect in; exit with how to make one if there is none."""
    if given:
        return given
    if importlib.util.find_spec("prefect") is not None:
        return sys.executable
    raise SystemExit(HOW_TO)


def prefect_env(home: Path) -> dict[str, str]:
    """Prefect's environment: its own home and ephemeral server, nothing of the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CONVEYOR_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # A busy machine may take a while to start the temporary server, and its
        # SQLite to answer: more patience than the defaults (20 s, 10 s, 5 retries).
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_SERVER_DATABASE_TIMEOUT="60",
        PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT="60",
        PREFECT_CLIENT_MAX_RETRIES="10",
    )
    return env


def measure_prefect(python: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Per-task seconds of the chain and tasks per second, medians over the rounds."""
    config = {"chain": args.chain, "tasks": args.runs * args.width, "rounds": args.rounds}
    result = tmp / "prefect.json"
    log = tmp / "prefect.log"
    with log.open("w") as out:
        # A session of its own: the temporary server Prefect starts goes with it.
        proc = subprocess.Popen(
            [python, "-c", PREFECT_SCRIPT, json.dumps(config), str(result)],
            env=prefect_env(tmp / "prefect-home"),
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=args.prefect_timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"the Prefect side failed or timed out ({code}):\n{tail}")
    rounds = json.loads(result.read_text())
    for failure in rounds["failures"]:
        print(f"a Prefect round failed and ran again: {failure}")
    return summary(rounds["chain"], rounds["fan"], args)


def summary(chains: list[float], fans: list[float], args: argparse.Namespace) -> dict[str, float]:
    """Median per-step seconds of the chains and median steps per second of the fans."""
    return {
        "step": statistics.median(chains) / args.chain,
        "throughput": args.runs * args.width / statistics.median(fans),
    }


# -- Conveyor, embedded --------------------------------------------------------------------


def timed(work: Callable[[], object]) -> float:
    """Seconds ``work`` took."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure_embedded(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """The chain and the fans in one ``EmbeddedEngine``, as ``conveyor run`` runs them."""
    engine = EmbeddedEngine(Settings(data_dir=tmp / "embedded"))
    chain = engine.compile(chain_pipeline(args.chain))
    fan = engine.compile(fan_pipeline(args.width))

    def run_all(compiled: Compiled, runs: int) -> None:
        plan = compiled.select(None)
        ids = [engine.start(plan, compiled.source).id for _ in range(runs)]
        for run_id in ids:
            final = engine.wait(run_id)
            assert final.status == "succeeded", final.error

    try:
        run_all(chain, 1)  # warm-up
        run_all(fan, 10)
        chains = [timed(lambda: run_all(chain, 1)) for _ in range(args.rounds)]
        fans = [timed(lambda: run_all(fan, args.runs)) for _ in range(args.rounds)]
    finally:
        engine.close()
    return summary(chains, fans, args)


# -- Conveyor, distributed ---------------------------------------------------------------


@contextlib.contextmanager
def conveyor_workers(args: argparse.Namespace, db_url: str, tmp: Path) -> Iterator[Conveyor]:
    """Two ``conveyor worker`` processes, ready, and the submitting side; stopped after."""
    env = worker_env(db_url, args.redis, tmp / "data")
    argv = [sys.executable, "-m", "conveyor", "worker", "-Q", "control,sandbox"]
    argv += ["-c", str(args.concurrency)]
    procs = [start([*argv, "-n", f"p{i}@%h", *QUIET], env, tmp / f"p{i}.log") for i in range(2)]
    side = Conveyor(Settings(database_url=db_url, broker_url=args.redis, data_dir=tmp / "data"))
    try:
        wait_ready(side.dispatcher.app, procs)
        yield side
    finally:
        side.dispatcher.close()
        side.store.close()
        stop(procs)


def measure_distributed(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """The chain and the fans through Celery and Postgres."""
    redis.Redis.from_url(args.redis).flushdb()
    with bench_database(args.postgres) as db_url, conveyor_workers(args, db_url, tmp) as side:
        side.fan(10, args.width)  # warm-up: both workers' composition, plans, pools
        side.chain(20)
        chains = [side.chain(args.chain)["step"] * args.chain for _ in range(args.rounds)]
        tasks = args.runs * args.width
        fans = [tasks / side.fan(args.runs, args.width)["throughput"] for _ in range(args.rounds)]
    return summary(chains, fans, args)


# -- the table ---------------------------------------------------------------------------


def report(
    prefect: dict[str, float], ours: dict[str, dict[str, float]], args: argparse.Namespace
) -> None:
    """Print measure, Conveyor, Prefect, ratio and goal for each shape."""
    tasks = args.runs * args.width
    rows = [("measure", "Conveyor", "Prefect", "ratio", "goal")]
    for shape, figures in ours.items():
        step, peer = figures["step"] * 1000, prefect["step"] * 1000
        rows.append(
            (
                f"{args.chain}-task chain, {shape}",
                f"{step:.2f} ms/task",
                f"{peer:.2f} ms/task",
                f"{step / peer:.2f}x",
                "<= 0.15x",
            )
        )
        rows.append(
            (
                f"{tasks} independent tasks, {shape}",
                f"{figures['throughput']:.0f} tasks/s",
                f"{prefect['throughput']:.0f} tasks/s",
                f"{figures['throughput'] / prefect['throughput']:.1f}x",
                ">= 25x",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"medians of {args.rounds} rounds each, warm-up runs left out")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefect-python", help="a Python that can import prefect")
    parser.add_argument("--chain", type=int, default=200, help="tasks in the chain")
    parser.add_argument("--runs", type=int, default=200, help="Conveyor runs of the fan")
    parser.add_argument("--width", type=int, default=10, help="independent steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of each")
    parser.add_argument(
        "--prefect-timeout", type=float, default=3600, help="seconds the Prefect side may take"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="pool size per worker")
    service_options(parser, redis_db=12)
    parser.add_argument(
        "--skip-distributed", action="store_true", help="embedded only (no Postgres, Redis)"
    )
    args = parser.parse_args()
    python = prefect_python(args.prefect_python)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prefect = measure_prefect(python, args, root)
        ours = {"embedded": measure_embedded(args, root)}
        if not args.skip_distributed:
            ours["distributed"] = measure_distributed(args, root)
    report(prefect, ours, args)


if __name__ == "__main__":
    main()
