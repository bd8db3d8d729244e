"""Memory a reader of a step's log costs the API, at two sizes of log: it should not grow.

Stores a step's log of ``--small`` and then ``--large`` MiB (the cap raised for it, as
an old log moved over by the migration may be), then reads each whole through the API
(a Flask test client, the answer streamed, never buffered) page after page from
``last_id``, with the largest page there is. Python's own allocations are traced while
reading: the peak is printed for each size, with the ratio large / small (flat is 1x)
and how it compares to the log itself.

    python bench/log_reader_memory.py [--small 16] [--large 64] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from conveyor.api import create_app
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Tokens
from conveyor.orchestrator.testing import MemoryDispatcher

PIPELINE = """\
pipelines:
  loud:
    steps:
      - {name: only, type: step.log, config: {message: hi}}
"""
LINE = "x" * 99  # 100 bytes with its newline
MiB = 1024**2


def fill(store: SqlStore, run_id: str, attempt: int, mib: int) -> None:
    """Write ``mib`` MiB of log to the run's step, as a worker's flushes do."""
    lines = [("stdout", LINE)] * 500
    for _ in range(mib * MiB // (100 * 500)):
        store.append_logs(run_id, "only", attempt, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=16, help="MiB of the small log")
    parser.add_argument("--large", type=int, default=64, help="MiB of the large log")
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = SqlStore(args.database_url or settings.resolved_database_url)
        store.upgrade()
        store.log_max_bytes = (args.large + 1) * MiB
        app = create_app(settings, store=store, dispatcher=MemoryDispatcher())
        client = app.test_client()
        _, secret = Tokens(store).create("bench", "operator")
        headers = {"Authorization": f"Bearer {secret}"}
        peaks = {}
        for mib in (args.small, args.large):
            run = client.post("/api/v1/runs", json={"definition": PIPELINE}, headers=headers)
            fill(store, run.get_json()["id"], 1, mib)
            run_id = run.get_json()["id"]
            url = f"/api/v1/runs/{run_id}/steps/only/logs"
            tracemalloc.start()
            started = time.perf_counter()
            lines, pages = read_pages(client, url, headers)
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            peaks[mib] = peak
            print(
                f"{mib:>5} MiB log ({lines} lines, {pages} pages): "
                f"reader peak {peak / MiB:6.1f} MiB, {seconds:5.1f} s"
            )
        ratio = peaks[args.large] / peaks[args.small]
        print(f"log x{args.large / args.small:.0f}: reader peak x{ratio:.2f}")
        store.close()


def read_pages(client: object, url: str, headers: dict[str, str]) -> tuple[int, int]:
    """(lines, pages) of the whole log, read from ``last_id`` while ``more`` says so."""
    after, total, pages = 0, 0, 0
    while True:
        answer = client.get(  # type: ignore[attr-defined]
            url,
            query_string={"after": after, "limit": 10_000, "max_bytes": 8 * MiB},
            headers=headers,
            buffered=False,
        )
        page = json.loads(b"".join(answer.response))
        total, pages, after = total + len(page["items"]), pages + 1, page["last_id"]
        if not page["more"]:
            return total, pages


if __name__ == "__main__":
    main()
