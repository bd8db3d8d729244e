"""Do clients following streams starve the rest of the API? They should not.

Starts ``conveyor api`` on 127.0.0.1 (a free port) on a fresh database, with a run whose
step wrote a long log and still runs. It times ``/healthz`` and ``GET /api/v1/runs``
(alternately, one at a time) with nobody following: the baseline. Then it opens clients
following that step's log and the run's events (half each, from their start, in a
process of their own so they share no interpreter with the timing) and, once all are
connected, times the same requests again while they catch up with the log, and once more
when they have (they follow on, waiting for lines). Printed: p50 and p99 of each, and
their ratios to the baseline.

    python bench/stream_load.py [--followers 200] [--requests 500] [--lines 20000]
                                [--threads 8] [--database-url URL]

Without ``--database-url`` the API runs on a SQLite file; give it an empty Postgres
database (it is migrated here) to measure that. The goal: p99 under 50 ms under load.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from urllib.parse import urlsplit

LISTENING = re.compile(r"listening on (?P<url>http://\S+)/api/v1")
PIPELINE = """\
pipelines:
  streamed:
    steps:
      - name: long
        type: step.shell_exec
        config: {{commands: ["seq 1 {lines}", "sleep 3600"]}}
"""


def conveyor(env: dict[str, str], *args: str) -> str:
    """``conveyor ARGS``'s output (the bench stops when it fails)."""
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"conveyor {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


@contextmanager
def api(env: dict[str, str], threads: int, log: Path) -> Iterator[str]:
    """``conveyor api`` on a free port: its base URL, until the block ends."""
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "api", "--port", "0", "--threads", str(threads)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := LISTENING.search(line):
                yield match.group("url")
                break
        else:
            raise SystemExit(f"conveyor api did not start: {log.read_text()}")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            print(f"conveyor api did not stop within 60 s: killed (its log: {log.read_text()})")
            proc.kill()
            proc.wait()


class Client:
    """One keep-alive connection to the API."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, "/api/v1" + path, data, self.headers)
        answer = self.conn.getresponse()
        return answer.status, answer.read()


def timed(client: Client, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` requests, /healthz and GET /runs in turn."""
    took = []
    for n in range(requests):
        path = "/healthz" if n % 2 == 0 else "/runs?limit=50"
        started = time.perf_counter()
        status, _ = client.call("GET", path)
        took.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"GET {path}: {status}")
    return took


def follow_all(
    url: str,
    token: str,
    paths: list[str],
    connected: Synchronized[int],
    ended: Synchronized[int],
    received: Synchronized[int],
) -> None:
    """Follow each of ``paths`` at once (in this process's event loop) until stopped."""

    async def one(path: str) -> None:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n"
        writer.write(head.encode())
        status = await reader.readline()
        if b" 200 " not in status:
            raise SystemExit(f"following {path}: {status!r}")
        with connected.get_lock():
            connected.value += 1
        while chunk := await reader.read(65536):
            with received.get_lock():
                received.value += len(chunk)
        with ended.get_lock():
            ended.value += 1

    async def every() -> None:
        await asyncio.gather(*(one(p) for p in paths))

    asyncio.run(every())


def percentiles(took: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    cuts = statistics.quantiles(took, n=100, method="inclusive")
    return cuts[49], cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--lines", type=int, default=20_000, help="lines of the followed log")
    parser.add_argument("--threads", type=int, default=8, help="conveyor api --threads")
    parser.add_argument("--database-url", help="an empty Postgres database (default: SQLite)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["CONVEYOR_DATA_DIR"] = str(Path(tmp) / "data")
        if args.database_url:
            env["CONVEYOR_DATABASE_URL"] = args.database_url
        conveyor(env, "db", "upgrade")
        token = conveyor(env, "token", "create", "--role", "operator", "--name", "bench")
        with api(env, args.threads, Path(tmp) / "api.log") as url:
            measure(url, token, args)


def measure(url: str, token: str, args: argparse.Namespace) -> None:
    """Start the run, time the baseline, then the same under followers; print both."""
    client = Client(url, token)
    status, body = client.call("POST", "/runs", {"definition": PIPELINE.format(lines=args.lines)})
    if status != 201:
        raise SystemExit(f"POST /runs: {status} {body[:300]!r}")
    run_id = json.loads(body)["id"]
    step = f"/api/v1/runs/{run_id}/steps/long/logs?follow=1"
    while True:  # the log written whole, the step still running
        _, page = client.call("GET", f"/runs/{run_id}/steps/long/logs?tail=1")
        items = json.loads(page)["items"]
        if items and items[-1]["text"] == "$ sleep 3600":
            break
        time.sleep(0.2)

    timed(client, 20)  # warm up
    baseline = timed(client, args.requests)

    counters = [multiprocessing.Value("i", 0) for _ in range(3)]
    connected, ended, received = counters
    half = args.followers // 2
    paths = [step] * (args.followers - half) + [f"/api/v1/runs/{run_id}/events?follow=1"] * half
    followers = multiprocessing.Process(
        target=follow_all, args=(url, token, paths, *counters), daemon=True
    )
    followers.start()
    began = time.monotonic()
    while connected.value < args.followers:
        if not followers.is_alive() or time.monotonic() - began > 120:
            raise SystemExit(f"only {connected.value} of {args.followers} followers started")
        time.sleep(0.05)
    started_in = time.monotonic() - began
    catching_up = timed(client, args.requests)  # while they read the log's backlog
    last = -1
    while received.value != last:  # caught up: nothing more arrives
        last = received.value
        time.sleep(1.0)
    loaded = timed(client, args.requests)
    still = args.followers - ended.value
    client.call("POST", f"/runs/{run_id}/cancel")
    followers.terminate()

    base50, base99 = percentiles(baseline)
    load50, load99 = percentiles(loaded)
    up50, up99 = percentiles(catching_up)
    print(f"{args.followers} followers ({args.followers - half} of a {args.lines}-line log, ")
    print(f"  {half} of the run's events): all connected in {started_in:.2f} s; {still} still")
    print(f"  following after the timed requests, {received.value / 1e6:.1f} MB received")
    print(f"{args.requests} requests, /healthz and GET /runs?limit=50 in turn:")
    print(f"  no followers (baseline)  p50 {base50:7.2f} ms   p99 {base99:7.2f} ms")
    print(f"  followers catching up    p50 {up50:7.2f} ms   p99 {up99:7.2f} ms")
    print(f"  followers following      p50 {load50:7.2f} ms   p99 {load99:7.2f} ms")
    print(f"  ratio, catching up       p50 {up50 / base50:7.2f}x     p99 {up99 / base99:7.2f}x")
    print(f"  ratio, following         p50 {load50 / base50:7.2f}x     p99 {load99 / base99:7.2f}x")
    verdict = "under" if load99 < 50 else "NOT under"
    print(f"  p99 while {args.followers} clients follow is {verdict} 50 ms")


if __name__ == "__main__":
    main()
