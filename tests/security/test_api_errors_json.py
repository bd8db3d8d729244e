"""Every answer under /api/v1 that is not a success is JSON, and outages say what is down
but never where it lives (a host, a port, a driver's message)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from conveyor.api import create_app
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.security.api_kit import RUNS, Headers, json_of


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("DELETE", f"{RUNS}/abcd/artifacts//x", 404),
        ("GET", f"{RUNS}/abcd/artifacts//x", 404),
        ("GET", "/api/v1//runs", 404),
        ("GET", "/api/v1/runs//", 404),
        ("GET", "/api/v1/nothing-here", 404),
        ("PUT", RUNS, 405),
        ("PATCH", f"{RUNS}/abcd", 405),
    ],
)
def test_routing_errors_answer_json_not_html(
    client: FlaskClient, admin: Headers, method: str, url: str, status: int
) -> None:
    answer = client.open(url, method=method, headers=admin)

    assert answer.status_code == status
    assert json_of(answer)["error"]
    assert b"<html" not in answer.data.lower()


def test_a_trailing_slash_is_the_same_route_not_a_redirect(
    client: FlaskClient, admin: Headers
) -> None:
    answer = client.get(f"{RUNS}/", headers=admin)

    assert answer.status_code == 200 and json_of(answer)["items"] == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{", "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"", "application/json", 400),
        (b"a=1&b=2", "application/x-www-form-urlencoded", 400),
        (b'{"n": ' + b"9" * 5000 + b"}", "application/json", 400),
        (b"[" * 200_000, "application/json", 400),
    ],
)
def test_bodies_werkzeug_or_json_cannot_parse_answer_json_400(
    client: FlaskClient, admin: Headers, body: bytes, content_type: str, status: int
) -> None:
    answer = client.post(RUNS, data=body, headers={**admin, "Content-Type": content_type})

    assert answer.status_code == status
    assert json_of(answer)["error"] in ("bad_request", "unstorable_value")


def test_a_body_past_the_limit_is_413_json(
    client: FlaskClient, admin: Headers, settings: Settings
) -> None:
    size = client.application.config["MAX_CONTENT_LENGTH"] + 1

    answer = client.post(
        RUNS, data=b" " * size, headers={**admin, "Content-Type": "application/json"}
    )

    assert answer.status_code == 413 and json_of(answer)["error"] == "request_entity_too_large"


def test_an_unreachable_database_is_503_saying_so_but_not_where_it_lives(
    settings: Settings,
) -> None:
    # A real store on a port nothing listens on: the driver's own error, not a stand-in.
    store = SqlStore("postgresql+psycopg://conveyor:hunter2@127.0.0.1:9/conveyor?connect_timeout=2")
    app = create_app(settings, store=store, dispatcher=MemoryDispatcher())
    client = app.test_client()

    ready = client.get("/api/v1/readyz")
    runs = client.get(RUNS, headers={"Authorization": "Bearer cvt_anything"})

    assert ready.status_code == 503
    assert json_of(ready)["detail"] == "database: unavailable"
    assert (runs.status_code, json_of(runs)) == (
        503,
        {"error": "store_unavailable", "detail": "the database is unavailable"},
    )
    for answer in (ready, runs):
        for secret in (b"127.0.0.1", b"port 9", b":9", b"hunter2", b"conveyor@", b"psycopg"):
            assert secret not in answer.data


def test_a_docs_file_the_browser_has_is_a_plain_304_that_keeps_its_validators(
    client: FlaskClient,
) -> None:
    """A 304 is no error: it keeps the headers that say how long the copy is good for."""
    url = "/api/v1/docs/swagger-ui.css"
    first = client.get(url)

    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})

    assert again.status_code == 304 and again.data == b""
    assert again.headers.get("ETag") == first.headers["ETag"]
    assert "max-age" in again.headers.get("Cache-Control", "")


def test_a_range_past_a_docs_file_s_end_is_416_json_saying_its_length(
    client: FlaskClient,
) -> None:
    url = "/api/v1/docs/swagger-ui.css"
    size = len(client.get(url).data)

    answer = client.get(url, headers={"Range": f"bytes={size + 10}-"})

    assert answer.status_code == 416 and json_of(answer)["error"]
    assert answer.headers.get("Content-Range") == f"bytes */{size}"
