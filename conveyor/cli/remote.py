"""The reading commands over the API: ``runs``, ``show``, ``logs``, ``cancel``, ``artifacts``.

With ``CONVEYOR_API_URL`` set, those commands ask the API (with ``CONVEYOR_TOKEN``) and
never open, or create, a local database; without it they read the embedded one, as
``conveyor run`` writes it. Answers come back as the store's records, so both print
the same way.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.orchestrator.errors import ConveyorError, NotFound
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import EventRecord, LogRecord, RunRecord, StepRecord

from .api_client import ApiClient, event_record, log_record, quote, run_record, step_record

#: The API's largest page of runs, and the lines (and bytes) asked for per page of a
#: log: the API's largest line count, so a long log takes few round trips, and a byte
#: bound that keeps one page a few MiB in memory.
RUNS_PAGE = 200
LOG_PAGE = 10_000
LOG_PAGE_BYTES = 4 * 1024**2


def api_client(settings: Settings) -> ApiClient | None:
    """A client of the API when ``CONVEYOR_API_URL`` is set (non-empty); else None."""
    if "api_url" not in settings.model_fields_set or not settings.api_url.strip():
        return None
    return ApiClient(settings.api_url.strip(), settings.token)


@dataclass(frozen=True)
class Artifact:
    """An artifact as the API lists it."""

    key: str
    kind: str
    size: int
    checksum: str
    created_at: Any


class Remote:
    """A run's records read over the API, shaped as the store's."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def list_runs(self, limit: int, status: str | None, pipeline: str | None) -> list[RunRecord]:
        """Up to ``limit`` runs, newest first, a page at a time."""
        found: list[RunRecord] = []
        cursor: str | None = None
        while len(found) < limit:
            page = self.client.get(
                "/runs",
                limit=min(RUNS_PAGE, limit - len(found)),
                status=status,
                pipeline=pipeline,
                cursor=cursor,
            )
            found += [run_record(item) for item in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                break
        return found[:limit]

    def run(self, ref: str) -> tuple[RunRecord, list[StepRecord]]:
        """The run (by id or unique prefix) and its steps."""
        data = self.client.get(f"/runs/{quote(ref)}")
        return run_record(data), [step_record(data["id"], s) for s in data["steps"]]

    def events(self, run_id: str) -> list[EventRecord]:
        """Every event of the run, in order."""
        found: list[EventRecord] = []
        after = 0
        while True:
            page = self.client.get(f"/runs/{quote(run_id)}/events", after=after)
            items = [event_record(run_id, e) for e in page["items"]]
            if not items:
                return found
            found += items
            after = items[-1].seq

    def logs(self, run_id: str, step: str, attempt: int | None) -> Iterator[LogRecord]:
        """A step's lines in order, one page in memory at a time."""
        after = 0
        path = f"/runs/{quote(run_id)}/steps/{quote(step)}/logs"
        while True:
            page = self.client.get(
                path, after=after, attempt=attempt, limit=LOG_PAGE, max_bytes=LOG_PAGE_BYTES
            )
            items = page["items"]
            for item in items:
                yield log_record(step, item)
            if not items or not (page.get("more") or len(items) >= LOG_PAGE):
                return
            after = items[-1]["id"]

    def tail(
        self, run_id: str, step: str, count: int, attempt: int | None
    ) -> tuple[list[LogRecord], bool]:
        """A step's last ``count`` lines (LOG_PAGE at most), and True when the answer's
        byte bound left some of them out."""
        path = f"/runs/{quote(run_id)}/steps/{quote(step)}/logs"
        page = self.client.get(path, tail=count, attempt=attempt, max_bytes=LOG_PAGE_BYTES)
        return [log_record(step, item) for item in page["items"]], bool(page.get("more"))

    def all_logs(
        self, run_id: str, steps: list[StepRecord], attempt: int | None
    ) -> Iterator[LogRecord]:
        """Every step's lines, merged in the order they were written (line ids)."""
        return heapq.merge(
            *(self.logs(run_id, s.key, attempt) for s in steps), key=lambda line: line.id
        )

    def cancel(self, ref: str) -> RunRecord:
        """Cancel the run; the run as it is then."""
        return run_record(self.client.request("POST", f"/runs/{quote(ref)}/cancel"))

    def artifacts(self, run_id: str) -> list[Artifact]:
        """The run's artifacts."""
        data = self.client.get(f"/runs/{quote(run_id)}/artifacts")
        return [
            Artifact(a["key"], a["kind"], a["size"], a["checksum"], a["created_at"])
            for a in data["items"]
        ]

    def fetch(self, run_id: str, key: str, output: Path | None) -> tuple[Path, int, str]:
        """Download an artifact, checked against its checksum: (where, size, sha256)."""
        known = {a.key: a for a in self.artifacts(run_id)}
        if key not in known:
            raise NotFound(f"run {run_id} has no artifact {key!r}")
        artifact = known[key]
        dest = output or Path(Path(key).name + (".tar" if artifact.kind == "dir" else ""))
        headers = self.client.download(f"/runs/{quote(run_id)}/artifacts/{_key_path(key)}", dest)
        expected = _header(headers, "X-Checksum-Sha256") or artifact.checksum
        digest, size = _sha256(dest)
        if digest != expected:
            dest.unlink(missing_ok=True)
            raise ConveyorError(
                f"artifact {key!r} of run {run_id} arrived damaged "
                f"(sha256 {digest}, expected {expected}); nothing was kept"
            )
        return dest, size, digest


def _key_path(key: str) -> str:
    return "/".join(quote(part) for part in key.split("/"))


def _header(headers: dict[str, str] | Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while block := stream.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
