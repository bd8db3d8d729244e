"""Artifact store throughput against ``cp``, and the memory a put or get takes.

A file of random bytes (200 MB by default) is stored with ``put`` and read back with
``get`` through the local store, and through the S3 store against a moto server on
127.0.0.1 when moto is installed. Each is timed against ``cp`` of the same file in the
same run of this script, interleaved, medians of ``--repeat`` rounds, and printed as a
throughput ratio (``cp`` time / store time; the target is at least 0.5x for the local
store). The local store does more than ``cp``: a SHA-256 of every byte on both ways and
an fsync before the rename that makes a put all-or-nothing. SHA-256 is one sequential
stream on one core, so the SHA-256 of the file alone, also printed, is the ceiling: the
store hashes on a thread of its own while it copies, and gets close to it.

Memory: the growth of this process's peak RSS during each put and get (the kernel's
high-water mark is reset before each one). Streamed, it stays a few MB whatever the
file size; a store reading the file whole would grow by the file's size.

    python bench/artifact_throughput.py [--size-mb 200] [--repeat 5] [--no-s3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from conveyor.orchestrator.artifacts import hash_stream
from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalArtifactStore
from conveyor.providers.s3 import S3ArtifactStore

MIB = 1024 * 1024
RUN = "bench-run"


def make_file(path: Path, size_mb: int) -> None:
    """Random bytes, written a MiB at a time (so this script's own peak stays low)."""
    with open(path, "wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(MIB))


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(work: Callable[[], Any]) -> tuple[float, int]:
    """Seconds ``work`` took and how far this process's peak RSS rose above its RSS."""
    # Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    start = time.perf_counter()
    work()
    elapsed = time.perf_counter() - start
    return elapsed, max(_status("VmHWM") - before, 0)


def cp(src: Path, dest: Path) -> float:
    """Seconds ``cp`` takes to copy ``src``."""
    dest.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    return time.perf_counter() - start


def sha256(src: Path) -> float:
    """Seconds the SHA-256 of ``src`` alone takes: no checksummed copy can beat it."""
    start = time.perf_counter()
    with open(src, "rb") as stream:
        hash_stream(stream)
    return time.perf_counter() - start


def rounds(store: ArtifactStore, src: Path, tmp: Path, repeat: int) -> dict[str, list[float]]:
    """Interleaved rounds of cp, put and get; times and peak RSS growths."""
    found: dict[str, list[float]] = {
        "cp": [],
        "sha256": [],
        "put": [],
        "get": [],
        "put_rss": [],
        "get_rss": [],
    }
    out = tmp / "got"
    for i in range(repeat):
        found["cp"].append(cp(src, tmp / "copy"))
        found["sha256"].append(sha256(src))
        key = f"big-{i}"
        put, put_rss = measured(lambda: store.put(RUN, key, src))  # noqa: B023 (called now)
        out.unlink(missing_ok=True)
        get, get_rss = measured(lambda: store.get(RUN, key, out))  # noqa: B023
        found["cp"].append(cp(src, tmp / "copy"))
        for name, value in (("put", put), ("get", get), ("put_rss", put_rss), ("get_rss", get_rss)):
            found[name].append(value)
        store.delete_run(RUN)
    return found


def report(name: str, size_mb: int, found: dict[str, list[float]], target: float | None) -> None:
    """Print medians as MB/s, ratios to cp, and the largest peak RSS growth."""
    base = statistics.median(found["cp"])
    aim = f"   (target >= {target}x)" if target else ""
    print(f"\n{name}: {size_mb} MB, median of {len(found['put'])} rounds")
    print(f"  cp                      {size_mb / base:8.0f} MB/s")
    ceiling = statistics.median(found["sha256"])
    print(
        f"  sha256 alone {size_mb / ceiling:8.0f} MB/s   ratio to cp {base / ceiling:5.2f}x"
        "   (the ceiling of any copy that checks SHA-256)"
    )
    for op in ("put", "get"):
        t = statistics.median(found[op])
        rss = max(found[f"{op}_rss"]) / MIB
        print(
            f"  {op:<4} {size_mb / t:8.0f} MB/s   ratio to cp {base / t:5.2f}x{aim}"
            f"   peak RSS growth {rss:6.1f} MiB"
        )


@contextmanager
def moto(tmp: Path) -> Iterator[S3ArtifactStore | None]:
    """The S3 store on a moto server of this script's own, or None without moto."""
    if importlib.util.find_spec("moto") is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **creds)
        _wait(lambda: client.create_bucket(Bucket="bench"))
        settings = Settings(data_dir=tmp, s3_bucket="bench", s3_endpoint_url=url)
        yield S3ArtifactStore(settings, client=client)
    finally:
        server.kill()
        server.wait()


def _wait(call: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-s3", action="store_true", help="Skip the S3 store on moto.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as name:
        tmp = Path(name)
        src = tmp / "input.bin"
        make_file(src, args.size_mb)
        local = LocalArtifactStore(Settings(data_dir=tmp / "data"))
        report("local store", args.size_mb, rounds(local, src, tmp, args.repeat), 0.5)
        if not args.no_s3:
            with moto(tmp) as s3:
                if s3 is None:
                    print("\ns3 store: skipped (moto is not installed)")
                else:
                    found = rounds(s3, src, tmp, max(1, args.repeat // 2))
                    report(
                        "s3 store on a moto server (a Python process: its speed, not ours)",
                        args.size_mb,
                        found,
                        None,
                    )
        shutil.rmtree(tmp / "data", ignore_errors=True)


if __name__ == "__main__":
    main()
