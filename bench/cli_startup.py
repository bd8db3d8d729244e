"""How long the ``conveyor`` command takes to start, against the interpreter's own floor.

Each command runs as a user runs it: the installed ``conveyor`` entry point (console
script, package lookup and all), in a fresh process, with its output thrown away. The
commands are timed in interleaved rounds (one of each per round, so a burst of load on
a shared machine falls on all of them alike) and the median of ``--repeat`` rounds is
printed beside ``python -c pass`` measured in the same rounds, the ratio to it (wall
clock and CPU time both), and the target (the targets are for wall clock; ``--help``
and ``validate`` have none and are shown for reference).

``runs`` reads an empty embedded database in a temporary directory; that database is
created (migrated) once before the rounds, as a user's first command would, so the
rounds time the common case: a database that is already current. Bytecode is cached as
an installed package has it: the commands write theirs under a temporary
``PYTHONPYCACHEPREFIX`` (whatever ``PYTHONDONTWRITEBYTECODE`` says), in a first round
that is not counted, so no round pays for compiling the sources.

    python bench/cli_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello.yaml"

#: (label, arguments after ``conveyor``, target in ms or None)
COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("conveyor --version", ["--version"], 150.0),
    ("conveyor --help", ["--help"], None),
    ("conveyor runs (empty db)", ["runs"], 400.0),
    ("conveyor validate hello.yaml", ["validate", str(EXAMPLE)], None),
]


def entry_point() -> str:
    """The installed ``conveyor`` script beside this interpreter (else the one on PATH)."""
    beside = Path(sys.executable).parent / "conveyor"
    found = str(beside) if beside.exists() else shutil.which("conveyor")
    if found is None:
        sys.exit("no `conveyor` entry point: install the package (pip install -e .)")
    return found


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from starting ``argv`` to its exit, and the CPU seconds it used.

    The CPU time (user + system) is the steadier figure on a loaded machine: it leaves
    out the time the process waited for a core. A failing command stops the bench.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def measure(repeat: int, env: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each command and of the floor, ``repeat`` interleaved rounds."""
    conveyor = entry_point()
    runs: dict[str, list[tuple[float, float]]] = {"python -c pass": []}
    runs.update({label: [] for label, _, _ in COMMANDS})
    timed([conveyor, "runs"], env)  # creates and migrates the empty database once
    for _, args, _ in COMMANDS:  # and caches every module's bytecode
        timed([conveyor, *args], env)
    for _ in range(repeat):
        runs["python -c pass"].append(timed([sys.executable, "-c", "pass"], env))
        for label, args, _ in COMMANDS:
            runs[label].append(timed([conveyor, *args], env))
    return runs


def report(runs: dict[str, list[tuple[float, float]]]) -> None:
    """One line per command: medians, ratio to the floor, target and whether it is met."""
    floor, floor_cpu = medians(runs["python -c pass"])
    print(f"{'command':<30} {'median':>9} {'x floor':>8} {'cpu':>9} {'x floor':>8} {'target':>10}")
    for label, _, target in [("python -c pass", [], None), *COMMANDS]:
        wall, cpu = medians(runs[label])
        goal = f"<= {target:.0f} ms" if target else ""
        verdict = "" if target is None else ("  ok" if wall * 1e3 <= target else "  OVER")
        print(
            f"{label:<30} {wall * 1e3:6.1f} ms {wall / floor:7.1f}x"
            f" {cpu * 1e3:6.1f} ms {cpu / floor_cpu:7.1f}x {goal:>10}{verdict}"
        )


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """The median wall time and the median CPU time."""
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


def main() -> None:
    """Parse the arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="Rounds (default 10).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-cli-") as scratch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
        env["CONVEYOR_DATA_DIR"] = str(Path(scratch) / "data")
        report(measure(args.repeat, env))


if __name__ == "__main__":
    main()
