"""The API as an ASGI app: follow streams on the event loop, everything else to Flask.

``conveyor api`` serves this with uvicorn, in one process:

- A request that may follow (a GET with ``follow`` in its query) runs the Flask view in
  the stream pool: the same authentication, parsing and errors as any request. A view
  that streams hands its ``Follow`` over (``streams.stream``) instead of a body, and the
  event loop follows it (``hub.follow_stream``) until it ends or the client leaves.
- Every other request goes to the Flask app through a2wsgi, on a thread pool of its own,
  after the body limit: a declared ``Content-Length`` past it is refused before a byte
  is read, and a chunked body is counted as it comes (and refused once past it).

Streams hold no thread while they wait, so followers never starve ``/healthz`` or
``GET /runs`` of the threads that answer them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import IO, Any

from a2wsgi import WSGIMiddleware
from a2wsgi.wsgi import build_environ

from .hub import Hub, Reader, follow_stream
from .models import ErrorBody
from .openapi import PREFIX
from .streams import HANDOVER, Follow

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: A chunked body is kept in memory up to this, then in a temporary file.
SPOOL_BYTES = 1 << 20
#: Bytes handed to the app per message when a spooled body is replayed.
REPLAY_BYTES = 1 << 16
#: The scope's key for the names of a response's headers, as the app wrote them.
NAMES = "conveyor.header_names"


@dataclass
class _Answer:
    """What the Flask app answered a request that may follow."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    follow: list[Follow] = field(default_factory=list)


class ServerApp:
    """The ASGI app around the Flask app (see the module's docstring)."""

    def __init__(self, app: WSGIApp, *, threads: int, max_body: int, poll: float) -> None:
        self.app, self.max_body = app, max_body
        self.forward = WSGIMiddleware(_named(app), workers=threads)  # type: ignore[arg-type]
        self.reader = Reader(threads)
        self.hub = Hub(self.reader, poll)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1000})
        elif _may_follow(scope):
            await self._follow(scope, receive, send)
        else:
            await self._forward(scope, receive, send)

    def close_streams(self) -> None:
        """End every stream (the server is stopping): its clients reconnect and resume."""
        self.hub.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close_streams()
                self.reader.close()
                self.forward.executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- follow streams ------------------------------------------------------------------

    async def _follow(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.reader.run(self._view, scope)
        if not answer.follow:  # an error, or no stream after all: the app's answer
            await _send_whole(send, answer.status, answer.headers, b"".join(answer.body))
            return
        headers = [(k, v) for k, v in answer.headers if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await _until_gone(self._relay(answer.follow[0], send), receive)

    def _view(self, scope: Scope) -> _Answer:
        """The Flask app's answer, in a thread; a stream's ``Follow`` is handed over."""
        answer = _Answer()
        environ: dict[str, Any] = dict(build_environ(scope, io.BytesIO()))  # type: ignore[arg-type]
        environ[HANDOVER] = answer.follow

        def start_response(status: str, headers: list[tuple[str, str]], _exc: Any = None) -> Any:
            answer.status = int(status.split(" ", 1)[0])
            answer.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            return answer.body.append

        result = self.app(environ, start_response)
        try:
            answer.body.extend(result)  # a page or an error: bounded; a stream's is empty
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return answer

    async def _relay(self, follow: Follow, send: Send) -> None:
        events = follow_stream(follow, self.hub)
        async with contextlib.aclosing(events):
            async for text in events:
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- everything else ------------------------------------------------------------------

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.strip().isdigit() and int(declared) > self.max_body:
                await _too_large(send, self.max_body)
                return
        elif "chunked" in (_header(scope, b"transfer-encoding") or "").lower():
            spooled = await self._spool(receive)
            if spooled is None:
                await _too_large(send, self.max_body)
                return
            scope, receive = _with_length(scope, spooled, receive)
        names: dict[bytes, bytes] = {}
        scope = {**scope, NAMES: names}
        await self.forward(scope, receive, _renaming(send, names))  # type: ignore[arg-type]

    async def _spool(self, receive: Receive) -> IO[bytes] | None:
        """A chunked body, read whole into a spooled file; None once past the limit."""
        spool: IO[bytes] = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                more = False
                continue
            chunk, more = message.get("body", b""), message.get("more_body", False)
            size += len(chunk)
            if size > self.max_body:
                spool.close()
                return None
            spool.write(chunk)
        spool.seek(0)
        return spool


def _named(app: WSGIApp) -> WSGIApp:
    """``app``, noting the names of its response headers as it wrote them (a2wsgi
    lowercases them; a client that looks for ``Content-Type`` should still find it)."""

    def named(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        names = environ["asgi.scope"][NAMES]

        def noting(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            names.update((k.lower().encode("latin-1"), k.encode("latin-1")) for k, _ in headers)
            return start_response(status, headers, *exc)

        return app(environ, noting)

    return named


def _renaming(send: Send, names: dict[bytes, bytes]) -> Send:
    """``send``, with the response's header names as the app wrote them."""

    async def renamed(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(names.get(k, k), v) for k, v in message.get("headers", [])]
            message = {**message, "headers": headers}
        await send(message)

    return renamed


def _may_follow(scope: Scope) -> bool:
    """A GET under the API that asks to follow (the view decides whether it streams)."""
    return (
        scope["method"] == "GET"
        and b"follow=" in scope.get("query_string", b"")
        and str(scope.get("path", "")).startswith(PREFIX + "/")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _with_length(scope: Scope, spool: IO[bytes], receive: Receive) -> tuple[Scope, Receive]:
    """The request with its spooled body: a Content-Length, and the body replayed."""
    size = spool.seek(0, io.SEEK_END)
    spool.seek(0)
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"transfer-encoding"]
    headers.append((b"content-length", str(size).encode()))

    async def replay() -> Message:
        if spool.closed:
            return await receive()  # past the body: the client's disconnect, if it comes
        chunk = spool.read(REPLAY_BYTES)
        more = spool.tell() < size
        if not more:
            spool.close()
        return {"type": "http.request", "body": chunk, "more_body": more}

    return {**scope, "headers": headers}, replay


async def _until_gone(relay: Awaitable[None], receive: Receive) -> None:
    """Run ``relay`` until it ends or the client goes away (then it is cancelled)."""
    relaying = asyncio.ensure_future(relay)
    leaving = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({relaying, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relaying, leaving):
            task.cancel()
        await asyncio.gather(relaying, leaving, return_exceptions=True)
    if not relaying.cancelled() and (error := relaying.exception()) is not None:
        raise error


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _too_large(send: Send, limit: int) -> None:
    body = ErrorBody(
        error="request_entity_too_large",
        detail=f"the request body is larger than any route takes ({limit} bytes)",
    )
    headers = [(b"Content-Type", b"application/json"), (b"Connection", b"close")]
    await _send_whole(send, 413, headers, body.model_dump_json(exclude_none=True).encode())


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
