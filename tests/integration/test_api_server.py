"""``conveyor api`` as a real HTTP server (uvicorn) on this machine's Postgres.

Without a broker the API runs steps in its own process, so these tests see runs go from
submission to their end over HTTP; the Celery workers are tested in their own suite.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import PG_ADMIN_URL, missing
from tests.integration.api_server import (
    Answer,
    Server,
    api_server,
    base_env,
    closed_port,
    conveyor,
    eventually,
)
from tests.integration.workers_kit import redis_database

pytestmark = pytest.mark.postgres

HELLO = """\
pipelines:
  hello:
    steps:
      - name: greet
        type: step.shell_exec
        config: {commands: ['echo "hello, $WHO"'], env: {WHO: "{{ .who }}"}}
      - name: after
        type: step.log
        config: {message: done}
"""
SLOW = """\
pipelines:
  slow:
    steps:
      - name: wait
        type: step.shell_exec
        config: {commands: ["sleep 60"]}
"""
TICKING = """\
pipelines:
  ticking:
    steps:
      - name: tick
        type: step.shell_exec
        config: {commands: ["for i in 1 2 3 4; do echo tick $i; sleep 0.5; done"]}
"""
FAILING = """\
pipelines:
  failing:
    steps:
      - name: break
        type: step.shell_exec
        config: {commands: ["echo about to fail", "exit 3"]}
"""


@pytest.fixture
def pg_admin() -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to this machine's Postgres."""
    try:
        conn = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        missing("Postgres", str(exc))
    yield conn
    conn.close()


@pytest.fixture
def scratch_database(pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """An empty database of the test's own (no schema), dropped afterwards."""
    name = f"conveyor_scratch_{uuid.uuid4().hex[:10]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def server(tmp_path: Path, pg_store: SqlStore, pg_database: str) -> Iterator[Server]:
    """The API on the session's Postgres, with an operator token made by `conveyor token`."""
    env = base_env(tmp_path, pg_database)
    made = conveyor("token", "create", "--role", "operator", "--name", "ci", env=env)
    assert made.returncode == 0, made.stderr
    with api_server(tmp_path, env) as running:
        running.token = made.stdout.strip()
        yield running


def finished(server: Server, run_id: str, timeout: float = 30.0) -> dict[str, object]:
    """The run once it has ended."""

    def ended() -> dict[str, object] | None:
        run: dict[str, object] = server.call("GET", f"/runs/{run_id}").json
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    return eventually(ended, timeout, f"run {run_id} to end")


def test_a_run_submitted_over_http_runs_to_its_end_and_is_listed(server: Server) -> None:
    answer = server.call("POST", "/runs", {"definition": HELLO, "params": {"who": "http"}})

    assert answer.status == 201, answer.raw
    run_id = answer.json["id"]
    assert answer.headers["Location"] == f"/api/v1/runs/{run_id}"
    run = finished(server, run_id)
    assert run["status"] == "succeeded", run
    listed = server.call("GET", "/runs?pipeline=hello&limit=5").json
    assert [r["id"] for r in listed["items"]] == [run_id]
    logs = server.call("GET", f"/runs/{run_id}/steps/greet/logs").json
    assert [line["text"] for line in logs["items"]] == ['$ echo "hello, $WHO"', "hello, http"]
    metrics = server.call("GET", "/metrics")
    assert b'conveyor_runs{status="succeeded"} 1.0' in metrics.raw


def test_a_running_run_is_cancelled_over_http(server: Server) -> None:
    run_id = server.call("POST", "/runs", {"definition": SLOW}).json["id"]
    eventually(
        lambda: server.call("GET", f"/runs/{run_id}").json["steps"][0]["status"] == "running"
    )

    answer = server.call("POST", f"/runs/{run_id}/cancel")

    assert (answer.status, answer.json["status"]) == (200, "cancelled")
    run = finished(server, run_id, timeout=15)
    step = eventually(
        lambda: (
            (s := server.call("GET", f"/runs/{run_id}").json["steps"][0])["status"] == "cancelled"
            and s
        ),
        15,
        "the running step to stop",
    )
    assert run["status"] == "cancelled" and step["completed_at"]
    again = server.call("POST", f"/runs/{run_id}/cancel")
    assert (again.status, again.json["error"]) == (409, "conflict")


def test_errors_are_json_with_the_right_status_never_html(server: Server) -> None:
    cases = [
        (server.call("GET", "/no-such-route"), 404, "not_found"),
        (server.call("DELETE", "/runs"), 405, "method_not_allowed"),
        (server.call("GET", "/runs", token=None), 401, "unauthorized"),
        (server.call("GET", "/runs", token="cvt_wrong"), 401, "unauthorized"),
        (server.call("POST", "/tokens", {"name": "x", "role": "admin"}), 403, "forbidden"),
        (server.call("POST", "/runs", data=b"{not json"), 400, "bad_request"),
        (server.call("GET", "/runs/0000dead"), 404, "not_found"),
        (server.call("POST", "/runs", {"definition": "pipelines: {p: {steps: []}}"}), 422, None),
    ]
    for answer, status, error in cases:
        assert answer.status == status, answer.raw
        body = answer.json
        assert set(body) >= {"error", "detail"}, body
        assert error is None or body["error"] == error
        assert b"<html" not in answer.raw.lower() and b"Traceback" not in answer.raw


def test_a_steps_log_is_followed_live_as_server_sent_events(server: Server) -> None:
    run_id = server.call("POST", "/runs", {"definition": TICKING}).json["id"]
    url = f"{server.url}/api/v1/runs/{run_id}/steps/tick/logs?follow=1"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {server.token}"})

    arrivals: list[tuple[float, str]] = []
    with urllib.request.urlopen(request, timeout=30) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line.removeprefix("data: ")))

    texts = [json.loads(data).get("text") for _, data in arrivals]
    assert texts[1:] == ["tick 1", "tick 2", "tick 3", "tick 4", None]  # after the `$ command`
    assert json.loads(arrivals[-1][1]) == {"status": "succeeded"}
    assert arrivals[-1][0] - arrivals[0][0] > 1.0  # line by line, not all at the end


def test_submit_and_watch_follow_a_run_over_the_api(tmp_path: Path, server: Server) -> None:
    (tmp_path / "hello.yaml").write_text(HELLO)
    (tmp_path / "failing.yaml").write_text(FAILING)

    ok = server.conveyor("submit", str(tmp_path / "hello.yaml"), "--param", "who=cli", "--watch")
    started = server.conveyor("submit", str(tmp_path / "failing.yaml"))
    run_id = started.stdout.split()[1]
    watched = server.conveyor("watch", run_id)

    assert ok.returncode == 0, ok.stderr
    assert "of hello: 2 steps" in ok.stdout and "greet succeeded" in ok.stdout
    assert started.returncode == 0 and started.stdout.startswith("run ")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "break failed" in watched.stdout
    assert "about to fail" in watched.stderr  # the failing step's last lines


def test_submit_reports_an_invalid_file_and_a_missing_token_in_one_line(
    tmp_path: Path, server: Server
) -> None:
    (tmp_path / "bad.yaml").write_text("pipelines: {p: {steps: [{name: a, type: step.nope}]}}\n")
    (tmp_path / "hello.yaml").write_text(HELLO)

    invalid = server.conveyor("submit", str(tmp_path / "bad.yaml"))
    anonymous = server.conveyor("submit", str(tmp_path / "hello.yaml"), CONVEYOR_TOKEN="")
    nowhere = server.conveyor("watch", "abcd", CONVEYOR_API_URL=f"http://127.0.0.1:{closed_port()}")

    assert invalid.returncode == 1 and "invalid pipeline: 1 problem(s)" in invalid.stderr
    assert "unknown step type 'step.nope'" in invalid.stderr
    assert anonymous.returncode == 1 and "set CONVEYOR_TOKEN" in anonymous.stderr
    assert nowhere.returncode == 1 and "cannot reach the Conveyor API" in nowhere.stderr
    for result in (invalid, anonymous, nowhere):
        assert "Traceback" not in result.stderr


def test_readyz_is_503_while_the_broker_port_is_closed(
    tmp_path: Path, pg_store: SqlStore, pg_database: str
) -> None:
    broker = f"redis://127.0.0.1:{closed_port()}/0"
    env = base_env(tmp_path, pg_database, CONVEYOR_BROKER_URL=broker)

    with api_server(tmp_path, env) as server:
        answer = server.call("GET", "/readyz", token=None)

    assert answer.status == 503
    ready = answer.json
    assert ready["error"] == "not_ready" and ready["detail"].startswith("broker:")
    assert ready["checks"]["database"]["ok"] and not ready["checks"]["broker"]["ok"]


def test_readyz_is_200_with_a_live_broker_and_steps_are_queued_for_workers(
    tmp_path: Path, pg_store: SqlStore, pg_database: str
) -> None:
    queue = f"api-test-{tmp_path.name[-12:]}"
    with redis_database() as broker:  # an index of this session's own, emptied after
        env = base_env(tmp_path, pg_database, CONVEYOR_BROKER_URL=broker)
        made = conveyor("token", "create", "--role", "operator", env=env)
        ready, run, depth = _submit_with_broker(tmp_path, env, made.stdout.strip(), queue)

    assert ready.status == 200, ready.raw
    assert ready.json["checks"]["broker"] == {"ok": True, "detail": "ok"}
    assert run["steps"][0]["status"] == "queued"  # sent to Celery; no worker listens here
    assert f'conveyor_queue_depth{{queue="{queue}",state="ready"}} 1.0'.encode() in depth


def _submit_with_broker(
    tmp_path: Path, env: dict[str, str], token: str, queue: str
) -> tuple[Answer, Any, bytes]:
    with api_server(tmp_path, env) as server:
        server.token = token
        ready = server.call("GET", "/readyz", token=None)
        step = {"name": "s", "type": "step.log", "queue": queue, "config": {"message": "x"}}
        definition = json.dumps({"pipelines": {"queued": {"steps": [step]}}})
        run = server.call("POST", "/runs", {"definition": definition}).json
        return ready, run, server.call("GET", "/metrics").raw


def test_the_api_refuses_to_start_on_an_outdated_schema(
    tmp_path: Path, scratch_database: str
) -> None:
    env = base_env(tmp_path, scratch_database)

    result = conveyor("api", "--port", "0", env=env, timeout=30)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `conveyor db upgrade`" in lines[0], result.stderr
    assert "listening" not in result.stdout


def test_the_api_answers_503_while_the_database_is_away_and_recovers(
    tmp_path: Path, scratch_database: str, pg_admin: psycopg.Connection[Any]
) -> None:
    env = base_env(tmp_path, scratch_database)
    assert conveyor("db", "upgrade", env=env).returncode == 0
    token = conveyor("token", "create", "--role", "viewer", env=env).stdout.strip()
    name = scratch_database.rsplit("/", 1)[1]

    with api_server(tmp_path, env) as server:
        server.token = token
        assert server.call("GET", "/runs").status == 200
        pg_admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg_admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        away = server.call("GET", "/runs")
        not_ready = server.call("GET", "/readyz", token=None)
        pg_admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        back = eventually(lambda: (a := server.call("GET", "/runs")).status == 200 and a, 10)

    assert (away.status, away.json["error"]) == (503, "store_unavailable")
    assert not_ready.status == 503 and not not_ready.json["checks"]["database"]["ok"]
    assert back.json["items"] == []


def test_a_body_larger_than_any_route_takes_is_refused_before_it_is_read(
    server: Server,
) -> None:
    # Given a request that declares 512 MiB of body: past any route's limit (a run with its source)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + (server.token or "").encode() + b"\r\n"
            b"Content-Length: 536870912\r\n\r\n" + b"{" * 1024
        )
        # When only its first kilobyte has been sent, Then the server already says 413
        answer = conn.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
