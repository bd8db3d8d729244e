"""Per-step overhead of an embedded run, against a plain Python loop doing the same work.

A chain of N ``step.shell_exec`` steps each running ``true`` in the local sandbox, timed
from submit to the run's end, against a loop of N ``subprocess.run(["/bin/sh", "-c",
"true"])`` calls in the same process and the same run of this script. Printed as a
ratio: the target is at most 2x. The same commands through the local sandbox alone
(its guard included, no run) show what running a command costs apart from the run.

    python bench/embedded_overhead.py [--steps 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from conveyor.orchestrator.contracts import SandboxConfig, SandboxRequest
from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalSandboxFactory


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


def sandbox_loop(steps: int, data_dir: Path) -> float:
    """Seconds for the same commands through the local sandbox alone (guard included)."""
    request = SandboxRequest("bench", "s", SandboxConfig(), threading.Event(), None)
    sandbox = LocalSandboxFactory(Settings(data_dir=data_dir)).open(request)
    sandbox.exec("true")  # the worker's guard server starts on first use
    start = time.perf_counter()
    for _ in range(steps):
        sandbox.exec("true")
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
        base, ours, noop, local = [], [], [], []
        for i in range(args.repeat):
            base.append(plain_loop(args.steps, root))
            local.append(sandbox_loop(args.steps, root / f"local{i}"))
            ours.append(embedded(args.steps, "step.shell_exec", root / f"shell{i}"))
            noop.append(embedded(args.steps, "step.set", root / f"set{i}"))
    n = args.steps
    b, o, s = statistics.median(base), statistics.median(ours), statistics.median(noop)
    sb = statistics.median(local)
    print(f"steps in chain:                          {n}")
    print(f"plain loop of subprocess calls:          {b * 1000 / n:7.2f} ms/step")
    print(f"local sandbox exec 'true', no run:       {sb * 1000 / n:7.2f} ms/step ({sb / b:.2f}x)")
    print(f"conveyor run, step.shell_exec 'true':    {o * 1000 / n:7.2f} ms/step")
    print(f"conveyor run, step.set (no subprocess):  {s * 1000 / n:7.2f} ms/step (orchestration)")
    print(f"ratio conveyor / plain loop:             {o / b:7.2f}x   (target <= 2x)")


if __name__ == "__main__":
    main()
