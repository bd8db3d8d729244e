"""The CLI's API client against a stub server on 127.0.0.1: where ``CONVEYOR_API_URL``
leads, and answers that are not the Conveyor API's, each one clear error line."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conveyor.cli.api_client import ApiClient
from conveyor.orchestrator.errors import ConveyorError

RUNS: dict[str, object] = {"items": [], "next_cursor": None}


class Stub(ThreadingHTTPServer):
    """Answers every GET with ``status`` and ``body``; remembers the paths asked for."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.status, self.body, self.type = 200, json.dumps(RUNS).encode(), "application/json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Stub

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("suffix", "path"),
    [
        ("", "/api/v1/runs"),
        ("/", "/api/v1/runs"),
        ("//", "/api/v1/runs"),
        ("/api/v1", "/api/v1/runs"),
        ("/api/v1/", "/api/v1/runs"),
        ("/ci", "/ci/api/v1/runs"),
        ("/ci/", "/ci/api/v1/runs"),
        ("/ci/api/v1/", "/ci/api/v1/runs"),
    ],
)
def test_the_api_url_may_end_in_a_slash_a_prefix_or_the_api_path(
    stub: Stub, suffix: str, path: str
) -> None:
    assert ApiClient(stub.url + suffix, None).get("/runs") == RUNS
    assert stub.paths == [path]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b"<html><body>Sign in</body></html>", "text/html"),
        (200, b"[1, 2", "application/json"),
        (502, b"<html>Bad Gateway</html>", "text/html"),
        (500, b"[]", "application/json"),
        (404, b'"not here"', "application/json"),
    ],
)
def test_an_answer_that_is_not_the_apis_is_one_clear_error(
    stub: Stub, status: int, body: bytes, kind: str
) -> None:
    stub.status, stub.body, stub.type = status, body, kind

    with pytest.raises(ConveyorError) as raised:
        ApiClient(stub.url, "t").get("/runs")

    message = raised.value.message
    assert "\n" not in message, message
    assert f"{status}" in message or "CONVEYOR_API_URL" in message, message


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:port", "http://[::1]:99999999"])
def test_an_api_url_that_is_no_url_is_one_clear_error(url: str) -> None:
    with pytest.raises(ConveyorError) as raised:
        ApiClient(url, None).get("/runs")

    assert "CONVEYOR_API_URL" in raised.value.message


def test_a_token_read_with_its_newline_is_sent_without_it(stub: Stub) -> None:
    client = ApiClient(stub.url, "cvt_abc\n")

    assert client.get("/runs") == RUNS
    assert client.token == "cvt_abc"


@pytest.mark.parametrize("token", ["cvt_a\nX-Evil: 1", "cvt_\x00", "cvt_é"])
def test_a_token_that_cannot_be_a_header_is_one_clear_error(token: str) -> None:
    with pytest.raises(ConveyorError) as raised:
        ApiClient("http://127.0.0.1:1", token).get("/runs")

    assert "CONVEYOR_TOKEN" in raised.value.message


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",  # another service on that port
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"items"',  # cut short
    ],
)
def test_a_port_that_answers_no_whole_http_is_one_clear_error(answer: bytes) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer_once() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        with pytest.raises(ConveyorError) as raised:
            ApiClient(f"http://127.0.0.1:{port}", None, timeout=10).get("/runs")
        thread.join(5)

    assert "CONVEYOR_API_URL" in raised.value.message
