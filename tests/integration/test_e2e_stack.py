"""The distributed shape end to end: `conveyor api` over HTTP, `conveyor worker` per queue,
`conveyor beat`, Postgres and Redis, all real processes."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.api_server import Server, api_server, conveyor, eventually
from tests.integration.workers_kit import Stack, redis_database, stack

PIPELINE = textwrap.dedent("""\
    pipelines:
      e2e:
        steps:
          - name: fetch
            type: step.shell_exec
            needs: []
            config:
              commands: ['echo "rev=abc123" >> "$CONVEYOR_OUTPUT"']
          - name: version
            type: step.set
            needs: []
            config: {values: {version: "1.{{ .build }}"}}
          - name: build
            type: step.shell_exec
            needs: [fetch, version]
            config:
              commands: ['echo "built {{ .steps.version.version }} at {{ .steps.fetch.rev }}"']
          - name: announce
            type: step.log
            config: {message: "done {{ .steps.version.version }}"}
""")


@pytest.fixture
def running(tmp_path: Path, pg_store: SqlStore, pg_database: str) -> Iterator[tuple[Server, Stack]]:
    """API, one worker for the control queue, one for sandbox, and beat."""
    key = Fernet.generate_key().decode()  # secrets cross hosts sealed with it
    with (
        redis_database() as broker,
        stack(pg_database, broker, tmp_path, CONVEYOR_SECRET_KEY=key) as workers,
    ):
        control = workers.worker("control", "control")
        sandbox = workers.worker("sandbox", "sandbox")
        beat = workers.beat()
        workers.wait_ready(control, sandbox, beat)
        made = conveyor("token", "create", "--role", "operator", env=workers.env)
        assert made.returncode == 0, made.stderr
        with api_server(tmp_path, workers.env) as server:
            server.token = made.stdout.strip()
            yield server, workers


def ended(server: Server, run_id: str, workers: Stack) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = server.call("GET", f"/runs/{run_id}").json
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        return eventually(check, 60, f"run {run_id} to end")
    except AssertionError:
        raise AssertionError(workers.logs()) from None


def all_cancelled(server: Server, run_id: str) -> bool | None:
    steps = server.call("GET", f"/runs/{run_id}").json["steps"]
    return all(step["status"] == "cancelled" for step in steps) or None


def test_a_run_posted_to_the_api_is_run_by_workers_on_their_queues(
    running: tuple[Server, Stack],
) -> None:
    server, workers = running

    answer = server.call("POST", "/runs", {"definition": PIPELINE, "params": {"build": "7"}})
    assert answer.status == 201, answer.raw
    run = ended(server, answer.json["id"], workers)

    assert run["status"] == "succeeded", run
    steps = {s["key"]: s for s in run["steps"]}
    assert all(s["status"] == "succeeded" for s in steps.values())
    # Routed by queue: shell steps on the sandbox worker, the others on the control one.
    events = server.call("GET", f"/runs/{run['id']}/events").json
    events = events["items"]
    owners = {
        e["step_key"]: e["payload"].get("owner", "") for e in events if e["type"] == "step.running"
    }
    assert {k for k, o in owners.items() if o.startswith("sandbox@")} == {"fetch", "build"}
    assert {k for k, o in owners.items() if o.startswith("control@")} == {"version", "announce"}
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    logs = server.call("GET", f"/runs/{run['id']}/steps/build/logs").json
    text = " ".join(line["text"] for line in logs["items"])
    assert "built 1.7 at abc123" in text


def test_cancel_and_retry_over_the_api(running: tuple[Server, Stack], tmp_path: Path) -> None:
    server, workers = running
    marker = tmp_path / "attempts"
    slow = textwrap.dedent(f"""\
        pipelines:
          slow:
            steps:
              - name: wait
                type: step.shell_exec
                config: {{commands: ["echo x >> {marker}; sleep 60"]}}
              - name: after
                type: step.log
                config: {{message: after}}
    """)
    run_id = server.call("POST", "/runs", {"definition": slow}).json["id"]
    eventually(lambda: marker.exists() or None, 30, "the step to start")

    assert server.call("POST", f"/runs/{run_id}/cancel").status in (200, 202)
    assert ended(server, run_id, workers)["status"] == "cancelled"
    # The worker running `wait` hears of it at its next heartbeat and kills the process.
    eventually(lambda: all_cancelled(server, run_id), 20, "the running step to stop")

    retried = server.call("POST", f"/runs/{run_id}/retry")
    assert retried.status in (200, 202), retried.raw
    eventually(lambda: len(marker.read_text().splitlines()) == 2 or None, 30, "the retry to start")
    server.call("POST", f"/runs/{run_id}/cancel")
    assert ended(server, run_id, workers)["status"] == "cancelled"


def test_secrets_posted_with_a_run_reach_the_workers_and_nothing_else(
    running: tuple[Server, Stack], pg_database: str
) -> None:
    server, workers = running
    secret = "s3cr3t-for-the-workers"
    text = textwrap.dedent("""\
        pipelines:
          deploy:
            steps:
              - name: use
                type: step.shell_exec
                config:
                  env: {TOKEN: "{{ .secrets.TOKEN }}", SUM: "{{ .sum }}"}
                  commands: ['echo "token is $TOKEN"', 'test "$(echo "$TOKEN" | md5sum)" = "$SUM"']
    """)

    digest = hashlib.md5((secret + "\n").encode()).hexdigest() + "  -"
    body = {"definition": text, "params": {"sum": digest}, "secrets": {"TOKEN": secret}}
    answer = server.call("POST", "/runs", body)
    run = ended(server, answer.json["id"], workers)

    assert run["status"] == "succeeded", run
    logs = server.call("GET", f"/runs/{run['id']}/steps/use/logs").json
    assert "token is ***" in [line["text"] for line in logs["items"]]
    assert secret not in answer.raw.decode() and secret not in str(run)
    import psycopg

    with psycopg.connect(pg_database) as conn:
        dump = [
            str(row)
            for table in (
                "workflow_instances",
                "workflow_events",
                "workflow_steps",
                "step_log_chunks",
                "run_secrets",
            )
            for row in conn.execute(f"SELECT * FROM {table}")
        ]
    assert dump and [row for row in dump if secret in row] == []
