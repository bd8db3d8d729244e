"""Overhead of a container step: ``step.shell_exec`` running ``true`` in an image, through
the embedded engine (``conveyor run``'s code path), against ``docker run --rm --network
none IMAGE true`` in the same run of this script. Printed as a ratio: the target is at
most 1.1x.

Each round times a chain of N container steps (submit to the run's end, workspace
cleanup included) and N ``docker run`` commands, one right after the other (in turns,
which goes first), so both see the same load; the ratio printed is the median of the
rounds' ratios, which the load of a shared machine moves least.

    python bench/docker_overhead.py [--steps 10] [--rounds 5] [--image conveyor-test/busybox]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from conveyor.orchestrator.engine import EmbeddedEngine
from conveyor.orchestrator.settings import Settings


def chain(steps: int, image: str) -> str:
    """A pipeline of ``steps`` container steps running ``true``, each after the last."""
    config = f"{{image: '{image}', commands: ['true']}}"
    lines = [
        f"      - {{name: s{i}, type: step.shell_exec, config: {config}}}" for i in range(steps)
    ]
    return "pipelines:\n  bench:\n    steps:\n" + "\n".join(lines) + "\n"


def docker_cli(steps: int, image: str) -> float:
    """Seconds for ``steps`` runs of ``docker run --rm --network none IMAGE true``."""
    argv = ["docker", "run", "--rm", "--network", "none", image, "true"]
    start = time.perf_counter()
    for _ in range(steps):
        subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def embedded(engine: EmbeddedEngine, text: str) -> float:
    """Seconds for one embedded run of ``text``, submit to finish."""
    compiled = engine.compile(text)
    start = time.perf_counter()
    run = engine.start(compiled.select(None), compiled.source)
    final = engine.wait(run.id)
    elapsed = time.perf_counter() - start
    assert final.status == "succeeded", final.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default="conveyor-test/busybox")
    args = parser.parse_args()
    text = chain(args.steps, args.image)
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddedEngine(Settings(data_dir=Path(tmp)))
        try:
            embedded(engine, chain(1, args.image))  # warm-up: imports, engine connection
            docker_cli(1, args.image)
            base, ours = [], []
            for round_number in range(args.rounds):
                if round_number % 2:
                    ours.append(embedded(engine, text))
                    base.append(docker_cli(args.steps, args.image))
                else:
                    base.append(docker_cli(args.steps, args.image))
                    ours.append(embedded(engine, text))
        finally:
            engine.close()
    n = args.steps
    b, o = statistics.median(base), statistics.median(ours)
    ratio = statistics.median(mine / theirs for mine, theirs in zip(ours, base, strict=True))
    print(f"container steps per round:               {n} (rounds: {args.rounds})")
    print(f"docker run --rm --network none {args.image} true: {b * 1000 / n:7.1f} ms/step")
    print(f"conveyor, step.shell_exec 'true' in it:  {o * 1000 / n:7.1f} ms/step")
    print(f"ratio conveyor / docker run:             {ratio:7.2f}x   (target <= 1.1x)")


if __name__ == "__main__":
    main()
