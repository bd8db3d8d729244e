"""Server-sent event streams: what a follower of a step's log or of a run's events reads.

A stream is a ``Follow``: a source that reads one page of what came after a point (in a
thread: it is store I/O) and a cheap ``head`` that changes whenever a next page could
hold something new. Two transports drive the same sources:

- ``sync_events``: a plain generator that reads a page, sleeps, reads again. The Flask
  app answers with it when nothing better serves it (the test client, any WSGI server).
- ``conveyor.api.asgi``: under ``conveyor api`` the Flask view only authenticates and
  parses; it hands the ``Follow`` over (``stream``) and the event loop follows it, one
  shared poll of its head per followed log or run, with no thread held while it waits.

Both write the same bytes: the same events, ids, heartbeats and end.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Protocol

from flask import Response, request
from werkzeug.datastructures import Headers

from conveyor.orchestrator.errors import ConveyorError

from .errors import error_code
from .models import ErrorBody

#: A comment line this often keeps proxies (and the server) aware of a quiet stream.
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keepalive\n\n"
#: The WSGI environ key under which an ASGI front end asks to take streams over: a list
#: the view appends its ``Follow`` to (see ``stream``).
HANDOVER = "conveyor.stream_handover"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Page:
    """What one read of a stream found after ``Follow.start`` or the last page."""

    text: str  # the events, already in SSE form ("" when there were none)
    after: int  # where the next read goes on from
    more: bool  # the read stopped at its bound: read again at once
    end: str | None  # the closing event, once the followed thing has ended


class Follow(Protocol):
    """A followed log or event list (its reads run in a worker thread)."""

    start: int  # the id or sequence number the follower has seen up to

    @property
    def key(self) -> Hashable:
        """Followers with equal keys share one poll of ``head``."""

    def head(self) -> Hashable:
        """A cheap read that differs whenever ``page`` could find something new."""

    def page(self, after: int) -> Page:
        """What came after ``after``, bounded (``more`` when it stopped short)."""


def sse(event: str, data: str, event_id: int | None = None) -> str:
    """One server-sent event (``data`` is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def error_event(exc: ConveyorError) -> str:
    """An error met once the headers were sent: it goes in the stream, as an event."""
    body = ErrorBody(error=error_code(type(exc).__name__), detail=exc.message)
    return sse("error", body.model_dump_json(exclude_none=True))


def resume_point(headers: Headers, after: int, highest: int) -> int:
    """Where to start: ``after``, or past the ``Last-Event-ID`` a reconnecting EventSource
    sends (the id of the last event it saw).

    Anything else there (not ASCII digits, or past ``highest``) is no event's id, and is
    ignored rather than read.
    """
    last_event = headers.get("Last-Event-ID", "")
    too_long = len(last_event) > len(str(highest))
    if not (last_event.isascii() and last_event.isdigit()) or too_long:
        return after
    seen = int(last_event)
    return max(after, seen) if seen <= highest else after


def stream(follow: Follow, poll: float) -> Response:
    """A text/event-stream response following ``follow``, that no proxy should buffer.

    When an ASGI front end serves this request (``HANDOVER`` in the environ), the body is
    left to it: the view has done its part (authentication, parsing, a 404 for what does
    not exist) and the event loop follows without holding this thread.
    """
    handover = request.environ.get(HANDOVER)
    if isinstance(handover, list):
        handover.append(follow)
        body: Iterator[str] = iter(())
    else:
        body = sync_events(follow, poll)
    return Response(body, mimetype="text/event-stream", headers=HEADERS)


def sync_events(follow: Follow, poll: float) -> Iterator[str]:
    """Follow in this thread: a page every ``poll`` seconds, a heartbeat when quiet."""
    after, quiet = follow.start, 0.0
    try:
        while True:
            page = follow.page(after)
            after = page.after
            if page.text:
                yield page.text
            if page.more:
                continue
            if page.end is not None:
                yield page.end
                return
            quiet = 0.0 if page.text else quiet + poll
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield KEEPALIVE
            time.sleep(poll)
    except ConveyorError as exc:  # the headers are sent: the error goes in the stream
        yield error_event(exc)
