"""A step's log: read it, or follow it as server-sent events until the step ends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Response

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.store import SqlStore

from .errors import error_code
from .models import ErrorBody, LogLine, LogList, LogQuery
from .routing import Call

#: Lines read per query while following: a long backlog is sent in slices.
BATCH = 1000
#: A comment line this often keeps proxies (and the server) aware of a quiet stream.
KEEPALIVE_SECONDS = 15.0


def step_logs(call: Call[None, LogQuery], run_id: str, step: str) -> LogList | Response:
    """The step's log lines (all, after ``after``, or the last ``tail``), or a live stream."""
    store, query = call.services.store, call.query
    run = store.find_run(run_id)
    current = store.get_step(run.id, step)
    if query.follow:
        after = _resume_point(call, query.after)
        poll = call.services.poll_seconds
        return stream(_follow(store, run.id, step, after, query.attempt, poll))
    if query.tail:
        lines = store.tail_logs(run.id, step, query.tail, attempt=query.attempt)
    else:
        lines = store.list_logs(run.id, step, after_id=query.after, attempt=query.attempt)
    last = lines[-1].id if lines else query.after
    return LogList(items=[LogLine.of(x) for x in lines], status=current.status, last_id=last)


def _resume_point(call: Call[None, LogQuery], after: int) -> int:
    """A reconnecting EventSource sends the id of the last line it saw."""
    last_event = call.headers.get("Last-Event-ID", "")
    return max(after, int(last_event)) if last_event.isdigit() else after


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
            lines = store.list_logs(run_id, step, after_id=after, attempt=attempt, limit=BATCH)
            for line in lines:
                after = line.id
                yield sse("log", LogLine.of(line).model_dump_json(), line.id)
            if len(lines) == BATCH:
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
