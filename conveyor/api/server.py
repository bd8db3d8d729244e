"""``conveyor api``'s HTTP server: uvicorn, in one process, serving ``asgi.ServerApp``.

Requests other than follow streams are answered by the Flask app on ``threads`` threads;
streams wait on the event loop and read on a pool of as many threads of their own. On
SIGTERM or SIGINT the server stops taking connections, ends every stream (an EventSource
reconnects and resumes where it was, with ``Last-Event-ID``), lets the requests under way
finish for up to ``GRACE_SECONDS``, and returns.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from .asgi import ServerApp, WSGIApp

#: How long requests under way may take to finish once the server is told to stop.
GRACE_SECONDS = 30


class Server(uvicorn.Server):
    """uvicorn's server, ending the streams first when it shuts down (they never end on
    their own, and uvicorn waits for every response under way)."""

    def __init__(self, config: uvicorn.Config, front: ServerApp) -> None:
        super().__init__(config)
        self.front = front

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.front.close_streams()
        await super().shutdown(sockets)


def make_server(
    app: WSGIApp, *, host: str, port: int, threads: int, max_body: int, poll: float
) -> tuple[Server, socket.socket]:
    """The server for ``app`` and its bound socket (``port`` 0: any free port)."""
    front = ServerApp(app, threads=threads, max_body=max_body, poll=poll)
    config = uvicorn.Config(
        front,
        host=host,
        port=port,
        http="h11",
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_config=None,  # the process's logging, as configured by the CLI
        access_log=False,
        proxy_headers=False,  # the peer's address is the client's: no proxy is trusted
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    sock = config.bind_socket()
    # Accepted connections inherit it: without it, an answer written as headers then body
    # waits for the client's delayed ACK (40 ms) on a kept-alive connection. asyncio sets
    # it only on sockets made with IPPROTO_TCP, which this one is not.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Listening from now on: a client that connects before the event loop runs waits in
    # the backlog instead of being refused (the CLI says it listens as soon as this returns).
    sock.listen(config.backlog)
    return Server(config, front), sock


def serve(
    app: WSGIApp,
    *,
    host: str,
    port: int,
    threads: int,
    max_body: int,
    poll: float,
    listening: Callable[[int], None],
) -> None:
    """Serve ``app`` on ``host:port`` until told to stop; ``listening(port)`` is called
    once the socket is bound (with the port it got when ``port`` was 0)."""
    server, sock = make_server(
        app, host=host, port=port, threads=threads, max_body=max_body, poll=poll
    )
    try:
        listening(sock.getsockname()[1])
        server.run(sockets=[sock])
    finally:
        sock.close()
