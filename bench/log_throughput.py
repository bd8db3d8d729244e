"""How fast a step's output is stored, and how fast a huge log's tail is read.

Storing: an embedded run of one ``step.shell_exec`` step printing ``seq N`` (1,000,000
and 5,000,000 short lines; ``CONVEYOR_LOG_MAX_BYTES`` raised so that every line is
kept), against two baselines measured in the same run of this script: the same
command redirected to a file by a plain shell (``sh -c 'seq N > file'``), and a step
running that redirected command (the same step overhead, no log). Times are the
step's own duration (started to completed, as the store has them), each the best of
``--repeat``; the ratio is of speeds (baseline seconds / logged seconds: 1x is as fast
as the file, the goal is at least 0.5x).

Reading: the last 100 lines of that 1,000,000-line log, against the last 100 lines
of a 100-line log, each read ``--reads`` times through the store: the ratio should
be about 1x (the tail is read from the newest chunks down the index).

    python bench/log_throughput.py [--repeat 3] [--reads 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings

SIZES = (1_000_000, 5_000_000)
TAIL = 100
MiB = 1024**2


def pipeline(command: str) -> str:
    """One step running ``command``."""
    return (
        "pipelines:\n  bench:\n    steps:\n"
        f"      - {{name: loud, type: step.shell_exec, config: {{commands: [{command!r}]}}}}\n"
    )


def step_seconds(engine: EmbeddedEngine, command: str) -> tuple[str, float]:
    """(run id, the step's duration) of a run of one step running ``command``."""
    compiled = engine.compile(pipeline(command))
    run = engine.start(compiled.select(None), compiled.source)
    final = engine.wait(run.id, poll=0.02)
    assert final.status == "succeeded", final.error
    step = engine.core.store.get_step(run.id, "loud")
    assert step.duration is not None
    return run.id, step.duration


def plain_shell(command: str, workdir: Path) -> float:
    """Seconds for ``command`` under a plain ``sh -c``."""
    start = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", command], cwd=workdir, check=True)
    return time.perf_counter() - start


def tail_seconds(engine: EmbeddedEngine, run_id: str, reads: int) -> float:
    """Seconds per read of the last TAIL lines of the run's step."""
    store = engine.core.store
    assert len(store.tail_logs(run_id, "loud", TAIL)) == TAIL
    start = time.perf_counter()
    for _ in range(reads):
        store.tail_logs(run_id, "loud", TAIL)
    return (time.perf_counter() - start) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, the best kept")
    parser.add_argument("--reads", type=int, default=200, help="tail reads of each log")
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            data_dir=root / "data", log_max_bytes=64 * MiB, database_url=args.database_url
        )
        engine = EmbeddedEngine(settings)
        try:
            big_run = ""
            for size in SIZES:
                plain = min(plain_shell(f"seq {size} > out", root) for _ in range(args.repeat))
                redirected = min(
                    step_seconds(engine, f"seq {size} > out")[1] for _ in range(args.repeat)
                )
                logged = [step_seconds(engine, f"seq {size}") for _ in range(args.repeat)]
                run_id, seconds = min(logged, key=lambda found: found[1])
                if size == SIZES[0]:
                    big_run = run_id
                print(
                    f"{size:>9,} lines: logged {seconds:6.3f} s | redirected to a file: "
                    f"plain shell {plain:6.3f} s (speed {plain / seconds:5.2f}x), "
                    f"in a step {redirected:6.3f} s (speed {redirected / seconds:5.2f}x)"
                )
            small_run, _ = step_seconds(engine, f"seq {TAIL}")
            big = tail_seconds(engine, big_run, args.reads)
            small = tail_seconds(engine, small_run, args.reads)
            print(
                f"last {TAIL} lines: of a {SIZES[0]:,}-line log {big * 1000:6.2f} ms, "
                f"of a {TAIL}-line log {small * 1000:6.2f} ms (ratio {big / small:4.2f}x)"
            )
        finally:
            engine.close()


if __name__ == "__main__":
    main()
