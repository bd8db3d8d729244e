"""The API as ``conveyor api`` serves it (uvicorn, ``conveyor.api.asgi``), over real HTTP.

Followers of a log or of a run's events wait on the event loop: they hold none of the
threads that answer other requests, share one poll per followed step, go away cleanly,
and read the same bytes the Flask app writes on its own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from flask import Flask
from flask.testing import FlaskClient

from conveyor.api.asgi import ServerApp
from conveyor.api.server import Server, make_server
from conveyor.api.services import Services
from conveyor.orchestrator.engine.attempt import Finished
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import RUNS, TWO_STEPS, submit, work
from tests.unit.api.test_logs import events

Headers = dict[str, str]
#: Fewer threads than followers: with a thread per follower, most would never start.
THREADS = 2
FOLLOWERS = 12


@dataclass
class Served:
    """A running server and where it listens."""

    server: Server
    url: str

    @property
    def front(self) -> ServerApp:
        return self.server.front


@contextmanager
def served(app: Flask, max_body: int = 1 << 20) -> Iterator[Served]:
    """``app`` served as ``conveyor api`` serves it, in a thread, on a free port."""
    poll = app.extensions["conveyor"].poll_seconds
    server, sock = make_server(
        app, host="127.0.0.1", port=0, threads=THREADS, max_body=max_body, poll=poll
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started, "the server to start")
        yield Served(server, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def eventually(check: Callable[[], object], what: str, within: float = 20.0) -> None:
    until = time.monotonic() + within
    while not check():
        assert time.monotonic() < until, f"not within {within}s: {what}"
        time.sleep(0.02)


@dataclass
class Follower:
    """A client following a stream in a thread of its own."""

    url: str
    headers: Headers
    status: int = 0
    body: bytes = b""
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as answer:
            self.status = answer.status_code
            self.connected.set()
            for chunk in answer.iter_raw():
                self.body += chunk

    def result(self) -> list[tuple[str, str]]:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the stream did not end"
        return events(self.body)


def test_a_stream_served_over_http_is_byte_for_byte_the_flask_apps(
    app: Flask,
    client: FlaskClient,
    operator: Headers,
    services: Services,
    recorder: MemoryDispatcher,
) -> None:
    # Given a run whose steps have ended, with lines in a log
    run = submit(client, operator, TWO_STEPS)
    work(services, recorder, fail=["package"], logs={"package": ["make: *** Error 2", "é ✓"]})
    paths = [
        f"{RUNS}/{run['id']}/steps/package/logs?follow=1",
        f"{RUNS}/{run['id']}/events?follow=1",
        f"{RUNS}/{run['id']}/events?follow=1&after=2",
    ]
    with served(app) as server:
        # When each stream is read over HTTP and through the Flask app
        over_http = [httpx.get(server.url + p, headers=operator, timeout=30) for p in paths]
    in_flask = [client.get(p, headers=operator) for p in paths]

    # Then the bytes and the headers that matter are the same
    for http, flask in zip(over_http, in_flask, strict=True):
        assert http.status_code == flask.status_code == 200
        assert http.content == flask.data
        for name in ("Content-Type", "Cache-Control", "X-Accel-Buffering"):
            assert http.headers[name] == flask.headers[name]
    assert events(over_http[0].content)[-1] == ("end", '{"status": "failed"}')


def test_errors_of_a_stream_are_the_flask_apps_errors(
    app: Flask, client: FlaskClient, operator: Headers, viewer: Headers
) -> None:
    run = submit(client, operator)
    cases = [
        (f"{RUNS}/{run['id']}/steps/only/logs?follow=1", {}),
        (f"{RUNS}/{run['id']}/steps/only/logs?follow=1", {"Authorization": "Bearer cvt_nope"}),
        (f"{RUNS}/{run['id']}/steps/nope/logs?follow=1", viewer),
        (f"{RUNS}/00000000/events?follow=1", viewer),
        (f"{RUNS}/{run['id']}/events?follow=maybe", viewer),
    ]
    with served(app) as server:
        answers = [httpx.get(server.url + p, headers=h, timeout=30) for p, h in cases]

    for (path, headers), answer in zip(cases, answers, strict=True):
        flask = client.get(path, headers=headers)
        assert (answer.status_code, answer.json()) == (flask.status_code, flask.json)
    assert [a.status_code for a in answers] == [401, 401, 404, 404, 400]


def test_many_followers_hold_no_thread_while_other_requests_are_answered(
    app: Flask,
    client: FlaskClient,
    operator: Headers,
    services: Services,
    recorder: MemoryDispatcher,
) -> None:
    # Given a running step, and more followers of its log and its run's events than threads
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None
    with served(app) as server:
        logs = f"{server.url}{RUNS}/{run['id']}/steps/only/logs?follow=1"
        run_events = f"{server.url}{RUNS}/{run['id']}/events?follow=1"
        followers = [Follower(logs, operator) for _ in range(FOLLOWERS)]
        followers += [Follower(run_events, operator) for _ in range(FOLLOWERS)]
        for follower in followers:
            assert follower.connected.wait(30) and follower.status == 200

        # When other requests come while they all follow
        health = httpx.get(f"{server.url}/api/v1/healthz", timeout=30)
        listed = httpx.get(f"{server.url}{RUNS}", headers=operator, timeout=30)
        watched = len(server.front.hub.watches)
        # and the step writes its lines and ends
        services.store.append_logs(ref.run_id, ref.step_key, ref.attempt, [("stdout", "one")])
        services.runtime.record([Finished(ref, outputs={}, logs=[("stdout", "two")])])
        got = [f.result() for f in followers]
        eventually(lambda: not server.front.hub.watches, "the watches to stop")

    # Then they were answered, both streams shared one poll each, and every follower saw all
    assert health.status_code == 200 and listed.status_code == 200
    assert watched == 2
    for seen in got[:FOLLOWERS]:
        assert [json.loads(d)["text"] for e, d in seen if e == "log"] == ["one", "two"]
        assert seen[-1] == ("end", '{"status": "succeeded"}')
    for seen in got[FOLLOWERS:]:
        types = [json.loads(d)["type"] for e, d in seen if e == "event"]
        assert types[-2:] == ["step.succeeded", "run.succeeded"]
        assert seen[-1] == ("end", '{"status": "succeeded"}')


def test_a_follower_that_goes_away_leaves_nothing_behind(
    app: Flask,
    client: FlaskClient,
    operator: Headers,
    services: Services,
    recorder: MemoryDispatcher,
) -> None:
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None
    services.store.append_logs(ref.run_id, ref.step_key, ref.attempt, [("stdout", "first")])
    with served(app) as server:
        path = f"{RUNS}/{run['id']}/steps/only/logs?follow=1"
        with httpx.stream("GET", server.url + path, headers=operator, timeout=30) as answer:
            # Given a client following a running step's log (its watch stays while it follows)
            chunks = answer.iter_raw()
            first = next(chunks)
            if not server.front.hub.watches:  # the stream ended: show how
                raise AssertionError(first + b"".join(chunks))
        # When the client has closed its connection, Then its watch stops
        eventually(lambda: not server.front.hub.watches, "the watch to stop")
        health = httpx.get(f"{server.url}/api/v1/healthz", timeout=30)
    assert b"first" in first and health.status_code == 200


def test_a_stopping_server_ends_its_streams_and_a_follower_resumes_where_it_was(
    app: Flask,
    client: FlaskClient,
    operator: Headers,
    services: Services,
    recorder: MemoryDispatcher,
) -> None:
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None
    services.store.append_logs(ref.run_id, ref.step_key, ref.attempt, [("stdout", "before")])
    path = f"{RUNS}/{run['id']}/steps/only/logs?follow=1"
    with served(app) as server:
        follower = Follower(server.url + path, operator)
        eventually(lambda: b"before" in follower.body, "the first line")
        # When the server is told to stop, Then the stream ends (with no `end` event)
        server.server.should_exit = True
        seen = follower.result()
    assert [e for e, _ in seen] == ["log"]
    last_id = follower.body.decode().split("id: ")[1].split("\n")[0]

    services.runtime.record([Finished(ref, outputs={}, logs=[("stdout", "after")])])
    with served(app) as server:
        resumed = httpx.get(
            server.url + path, headers={**operator, "Last-Event-ID": last_id}, timeout=30
        )
    texts = [json.loads(d)["text"] for e, d in events(resumed.content) if e == "log"]
    assert texts == ["after"]


def test_a_body_past_the_limit_is_refused_before_flask_reads_it(
    app: Flask, operator: Headers
) -> None:
    definition = json.dumps({"definition": TWO_STEPS}).encode()
    with served(app, max_body=4096) as server:
        declared = _raw(server.url, b"Content-Length: 536870912\r\n\r\n{")
        chunked = httpx.post(
            server.url + RUNS,
            headers={**operator, "Content-Type": "application/json"},
            content=iter([b" " * 3000, b" " * 3000, b"{}"]),  # no length: sent chunked
            timeout=30,
        )
        small = httpx.post(
            server.url + RUNS,
            headers={**operator, "Content-Type": "application/json"},
            content=iter([definition[:10], definition[10:]]),
            timeout=30,
        )
    assert declared.startswith("HTTP/1.1 413"), declared[:200]
    assert (chunked.status_code, chunked.json()["error"]) == (413, "request_entity_too_large")
    assert small.status_code == 201, small.text


def _raw(url: str, rest: bytes) -> str:
    """The first bytes answered to a POST whose headers end with ``rest``."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\n" + rest)
        return conn.recv(4096).decode("latin-1")
