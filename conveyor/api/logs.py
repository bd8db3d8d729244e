"""A step's log: read it a page at a time, or follow it as server-sent events until the
step ends.

A log can be large (up to ``CONVEYOR_LOG_MAX_BYTES`` per attempt, every attempt), so no
answer holds it whole: a page is bounded by ``limit`` lines and ``max_bytes`` of text,
and is written out as the store's chunks are read, never built first.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator

from flask import Response

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store import LogRecord, SqlStore

from .errors import error_code
from .models import LOG_PAGE_BYTES, MAX_LINE_ID, ErrorBody, LogLine, LogList, LogQuery
from .routing import Call

#: Lines sent per read while following: a long backlog is sent in slices.
BATCH = 1000
#: A comment line this often keeps proxies (and the server) aware of a quiet stream.
KEEPALIVE_SECONDS = 15.0


def step_logs(call: Call[None, LogQuery], run_id: str, step: str) -> LogList | Response:
    """A page of the step's lines (after ``after``, or the last ``tail``), or a live stream."""
    store, query = call.services.store, call.query
    run = store.find_run(run_id)
    current = store.get_step(run.id, step)
    if query.follow:
        after = _resume_point(call, query.after)
        poll = call.services.poll_seconds
        return stream(_follow(store, run.id, step, after, query.attempt, poll))
    if query.tail:
        lines = store.tail_logs(run.id, step, query.tail, attempt=query.attempt)
        kept = _last_within(lines, query.max_bytes)
        last = kept[-1].id if kept else query.after
        items = [LogLine.of(x) for x in kept]
        return LogList(
            items=items, status=current.status, last_id=last, more=len(kept) < len(lines)
        )
    found = store.iter_logs(run.id, step, after_id=query.after, attempt=query.attempt)
    first = list(itertools.islice(found, 1))  # a store that is away fails here, as a 503
    page = _Page(itertools.chain(first, found), query.limit, query.max_bytes)
    return Response(_page_json(page, current.status, query.after), mimetype="application/json")


def size_of(line: LogRecord) -> int:
    """What a line weighs against ``max_bytes``."""
    return len(line.text.encode("utf-8", "surrogatepass")) + 1


class _Page:
    """Lines of a log up to a count and a size; ``more`` once one was left out."""

    def __init__(self, lines: Iterator[LogRecord], limit: int, max_bytes: int) -> None:
        self.lines, self.limit, self.max_bytes = lines, limit, max_bytes
        self.more = False

    def __iter__(self) -> Iterator[LogRecord]:
        size = 0
        for sent, line in enumerate(self.lines):
            size += size_of(line)
            if sent >= self.limit or (sent and size > self.max_bytes):
                self.more = True
                return
            yield line


def _page_json(page: _Page, status: StepStatus, after: int) -> Iterator[str]:
    """A ``LogList``, written line by line as the page is read."""
    yield '{"items":['
    last = after
    for n, line in enumerate(page):
        yield ("," if n else "") + LogLine.of(line).model_dump_json()
        last = line.id
    tail = {"status": status.value, "last_id": last, "more": page.more}
    yield "]," + json.dumps(tail, separators=(",", ":"))[1:]


def _last_within(lines: list[LogRecord], max_bytes: int) -> list[LogRecord]:
    """The last of ``lines`` that fit in ``max_bytes`` (at least one)."""
    size, start = 0, len(lines)
    while start > 0:
        size += size_of(lines[start - 1])
        if size > max_bytes and start < len(lines):
            break
        start -= 1
    return lines[start:]


def _resume_point(call: Call[None, LogQuery], after: int) -> int:
    """A reconnecting EventSource sends the id of the last line it saw.

    Anything else there (not ASCII digits, or past any line id) is not a line id, and
    is ignored rather than read.
    """
    last_event = call.headers.get("Last-Event-ID", "")
    if not (last_event.isascii() and last_event.isdigit()) or len(last_event) > 16:
        return after
    seen = int(last_event)
    return max(after, seen) if seen <= MAX_LINE_ID else after


def stream(events: Iterator[str]) -> Response:
    """A text/event-stream response that no proxy should buffer or cache."""
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events, mimetype="text/event-stream", headers=headers)


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (``data`` is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _follow(
    store: SqlStore, run_id: str, step: str, after: int, attempt: int | None, poll: float
) -> Iterator[str]:
    """``log`` events for each line, then one ``end`` event once the step has ended.

    The step's status is read before its lines: a worker writes a step's last lines in
    the transaction that ends it, so once it is seen ended, one more read has them all.
    """
    quiet = 0.0
    try:
        while True:
            status = store.get_step(run_id, step).status
            found = store.iter_logs(run_id, step, after_id=after, attempt=attempt)
            page = _Page(found, BATCH, LOG_PAGE_BYTES)
            lines = 0
            for line in page:
                after, lines = line.id, lines + 1
                yield sse("log", LogLine.of(line).model_dump_json(), line.id)
            if page.more:
                continue
            if status.terminal:
                yield sse("end", json.dumps({"status": status.value}))
                return
            quiet = 0.0 if lines else quiet + poll
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keepalive\n\n"
            time.sleep(poll)
    except ConveyorError as exc:  # the headers are sent: the error goes in the stream
        body = ErrorBody(error=error_code(type(exc).__name__), detail=exc.message)
        yield sse("error", body.model_dump_json(exclude_none=True))
