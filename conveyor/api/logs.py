"""A step's log: read it a page at a time, or follow it as server-sent events until the
step ends.

A log can be large (up to ``CONVEYOR_LOG_MAX_BYTES`` per attempt, every attempt), so no
answer holds it whole: a page is bounded by ``limit`` lines and ``max_bytes`` of text,
and is written out as the store's chunks are read, never built first.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from flask import Response

from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store import LogRecord, SqlStore

from .models import LOG_PAGE_BYTES, MAX_LINE_ID, LogLine, LogList, LogQuery
from .routing import Call
from .streams import Page, resume_point, sse, stream

#: Lines sent per read while following: a long backlog is sent in slices.
BATCH = 1000


def step_logs(call: Call[None, LogQuery], run_id: str, step: str) -> LogList | Response:
    """A page of the step's lines (after ``after``, or the last ``tail``), or a live stream."""
    store, query = call.services.store, call.query
    run = store.find_run(run_id)
    current = store.get_step(run.id, step)
    if query.follow:
        after = resume_point(call.headers, query.after, MAX_LINE_ID)
        follow = LogFollow(store, run.id, step, query.attempt, start=after)
        return stream(follow, call.services.poll_seconds)
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


@dataclass
class LogFollow:
    """A step's log as a stream (``streams.Follow``): ``log`` events for each line, then
    one ``end`` event once the step has ended."""

    store: SqlStore
    run_id: str
    step: str
    attempt: int | None
    start: int = 0

    @property
    def key(self) -> Hashable:
        """Followers of the same step's log (and attempt) share one poll."""
        return ("log", self.run_id, self.step, self.attempt)

    def head(self) -> Hashable:
        """The step's status and its last line: new lines or an end change it."""
        status = self.store.get_step(self.run_id, self.step).status
        last = self.store.tail_logs(self.run_id, self.step, 1, attempt=self.attempt)
        return status, last[-1].id if last else 0

    def page(self, after: int) -> Page:
        """Up to ``BATCH`` lines after ``after``, and the end when the step has ended.

        The step's status is read before its lines: a worker writes a step's last lines in
        the transaction that ends it, so once it is seen ended, one more read has them all.
        """
        status = self.store.get_step(self.run_id, self.step).status
        found = self.store.iter_logs(self.run_id, self.step, after_id=after, attempt=self.attempt)
        page = _Page(found, BATCH, LOG_PAGE_BYTES)
        events = []
        for line in page:
            after = line.id
            events.append(sse("log", LogLine.of(line).model_dump_json(), line.id))
        close = getattr(found, "close", None)
        if close is not None:  # a page cut short leaves its read open: end it now
            close()
        end = None
        if status.terminal and not page.more:
            end = sse("end", json.dumps({"status": status.value}))
        return Page("".join(events), after, page.more, end)
