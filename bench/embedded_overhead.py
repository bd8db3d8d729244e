"""Per-step overhead of an embedded run, against a plain Python loop doing the same work.

A chain of N ``step.shell_exec`` steps each running ``true`` in the local sandbox, timed
from submit to the run's end, against a loop of N ``subprocess.run(["/bin/sh", "-c",
"true"])`` calls in the same process and the same run of this script. Printed as a
ratio: the target is at most 3x.

    python bench/embedded_overhead.py [--steps 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings


def chain(steps: int, step_type: str) -> str:
    """A pipeline of ``steps`` steps, each after the previous one."""
    config = "{commands: ['true']}" if step_type == "step.shell_exec" else "{values: {x: '1'}}"
    lines = [f"      - {{name: s{i}, type: {step_type}, config: {config}}}" for i in range(steps)]
    return "pipelines:\n  bench:\n    steps:\n" + "\n".join(lines) + "\n"


def plain_loop(steps: int, workdir: Path) -> float:
    """Seconds for the same subprocess calls in a plain loop."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    start = time.perf_counter()
    for _ in range(steps):
        subprocess.run(
            ["/bin/sh", "-c", "true"], cwd=workdir, env=env, capture_output=True, check=True
        )
    return time.perf_counter() - start


def embedded(steps: int, step_type: str, data_dir: Path) -> float:
    """Seconds for an embedded run of the chain, submit to finish."""
    engine = EmbeddedEngine(Settings(data_dir=data_dir))
    try:
        compiled = engine.compile(chain(steps, step_type))
        start = time.perf_counter()
        run = engine.start(compiled.select(None), compiled.source)
        final = engine.wait(run.id)
        elapsed = time.perf_counter() - start
        assert final.status == "succeeded", final.error
        return elapsed
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, ours, noop = [], [], []
        for i in range(args.repeat):
            base.append(plain_loop(args.steps, root))
            ours.append(embedded(args.steps, "step.shell_exec", root / f"shell{i}"))
            noop.append(embedded(args.steps, "step.set", root / f"set{i}"))
    n = args.steps
    b, o, s = statistics.median(base), statistics.median(ours), statistics.median(noop)
    print(f"steps in chain:                          {n}")
    print(f"plain loop of subprocess calls:          {b * 1000 / n:7.2f} ms/step")
    print(f"conveyor run, step.shell_exec 'true':    {o * 1000 / n:7.2f} ms/step")
    print(f"conveyor run, step.set (no subprocess):  {s * 1000 / n:7.2f} ms/step (orchestration)")
    print(f"ratio conveyor / plain loop:             {o / b:7.2f}x   (target <= 3x)")


if __name__ == "__main__":
    main()
