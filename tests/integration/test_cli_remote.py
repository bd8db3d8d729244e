"""The CLI against a real ``conveyor api``: with CONVEYOR_API_URL set, every reading
command answers from the API and no local database is made.

Each command runs as a user would run it, in a directory of its own whose environment
names only the API and a token: a command that fell back to the embedded store would
create ``.conveyor/`` there (and find no runs in it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conveyor.orchestrator.store.sql import SqlStore
from tests.integration.api_server import Server, api_server, base_env, conveyor, eventually

pytestmark = pytest.mark.postgres

SECRET = "s3cr3t-value"
PIPELINE = """\
pipelines:
  remote:
    steps:
      - name: greet
        type: step.shell_exec
        config:
          env: {TOKEN: "{{ .secrets.token }}"}
          commands:
            - echo "token is $TOKEN"
            - test "$TOKEN" = "s3cr3t-value"
            - echo "built" > out.txt
            - echo line two
      - name: keep
        type: step.artifact_push
        config: {source_path: out.txt, key: reports/out.txt}
"""
SLOW = """\
pipelines:
  slow:
    steps:
      - {name: nap, type: step.shell_exec, config: {commands: ["sleep 60"]}}
"""


@pytest.fixture
def server(tmp_path: Path, pg_store: SqlStore, pg_database: str) -> Iterator[Server]:
    """The API (no broker: it runs steps itself), sealing secrets, with an operator token."""
    env = base_env(
        tmp_path / "api", pg_database, CONVEYOR_SECRET_KEY=Fernet.generate_key().decode()
    )
    made = conveyor("token", "create", "--role", "operator", "--name", "cli", env=env)
    assert made.returncode == 0, made.stderr
    with api_server(tmp_path, env) as running:
        running.token = made.stdout.strip()
        yield running


class User:
    """``conveyor`` in a directory of its own, knowing only the API's address and a token."""

    def __init__(self, workdir: Path, server: Server) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        assert server.token is not None
        self.env.update(CONVEYOR_API_URL=server.url, CONVEYOR_TOKEN=server.token, COLUMNS="200")

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def made(self) -> list[str]:
        """Everything the commands left in the directory."""
        return sorted(str(p.relative_to(self.workdir)) for p in self.workdir.rglob("*"))


def test_reading_commands_use_the_api_and_never_make_a_local_database(
    server: Server, tmp_path: Path
) -> None:
    user = User(tmp_path / "laptop", server)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    # Given a run submitted with a secret (the step checks it arrived)
    submitted = user("submit", str(tmp_path / "pipeline.yaml"), "--secret", f"token={SECRET}", "-w")
    run_id = submitted.stdout.split()[1]
    assert server.call("GET", f"/runs/{run_id}").json["status"] == "succeeded"
    # When the user lists, shows, reads logs and artifacts, all from the API
    listed = user("runs", "--pipeline", "remote")
    shown = json.loads(user("show", run_id[:8], "--json").stdout)
    text = user("show", run_id).stdout
    log = user("logs", run_id, "greet").stdout
    every = user("logs", run_id).stdout
    artifacts = user("artifacts", run_id).stdout
    user("artifacts", "get", run_id, "reports/out.txt", "-o", "fetched.txt")
    # Then each answered with the API's run
    assert run_id in listed.stdout and "succeeded" in listed.stdout
    assert shown["id"] == run_id and shown["status"] == "succeeded"
    assert [s["key"] for s in shown["steps"]] == ["greet", "keep"]
    assert any(e["type"] == "run.succeeded" for e in shown["events"])
    assert "greet" in text and "run.succeeded" in text
    assert "token is ***" in log and "line two" in log and SECRET not in log
    assert "[greet] line two" in every and "[keep] stored out.txt" in every
    assert "reports/out.txt" in artifacts
    assert (user.workdir / "fetched.txt").read_text() == "built\n"
    # and nothing local was made: no .conveyor/, nothing but the fetched file
    assert user.made() == ["fetched.txt"]


def test_cancel_goes_to_the_api(server: Server, tmp_path: Path) -> None:
    user = User(tmp_path / "laptop", server)
    (tmp_path / "slow.yaml").write_text(SLOW)
    run_id = user("submit", str(tmp_path / "slow.yaml")).stdout.split()[1]
    eventually(
        lambda: server.call("GET", f"/runs/{run_id}").json["status"] == "running", 30, "running"
    )
    cancelled = user("cancel", run_id)
    assert f"run {run_id} cancelled" in cancelled.stdout
    assert server.call("GET", f"/runs/{run_id}").json["status"] == "cancelled"
    assert user.made() == []


def test_an_unknown_run_is_the_apis_answer_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    user = User(tmp_path / "laptop", server)
    for args in (("show", "ffffffff"), ("logs", "ffffffff"), ("artifacts", "ffffffff")):
        missing = user(*args, ok=False)
        assert missing.returncode == 1 and "ffffffff" in missing.stderr, missing.stderr
    assert user.made() == []


def test_without_the_api_url_the_embedded_database_is_read(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    workdir = tmp_path / "here"
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "runs"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (workdir / ".conveyor").is_dir()  # the embedded default, unchanged
