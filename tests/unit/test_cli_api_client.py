"""The CLI's API client against a stub server on 127.0.0.1: where ``CONVEYOR_API_URL``
leads, and answers that are not the Conveyor API's, each one clear error line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conveyor.cli.api_client import ApiClient
from conveyor.orchestrator.errors import ConveyorError

RUNS = {"items": [], "next_cursor": None}


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

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
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
