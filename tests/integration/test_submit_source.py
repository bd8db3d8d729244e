"""``conveyor submit --source DIR`` on the distributed shape: a real ``conveyor api``, real
Celery workers on Postgres and Redis, and an S3 artifact store (moto) as the only thing
they share. The API and each worker "host" have data directories of their own, so the
source reaches a worker's workspace only through the store.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from conveyor.orchestrator.errors import ArtifactNotFound
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.providers.s3.artifacts import S3ArtifactStore
from tests.integration.api_server import Server, api_server, conveyor, eventually
from tests.integration.s3_kit import client, empty, moto_server
from tests.integration.workers_kit import Stack, redis_database, stack

pytestmark = pytest.mark.postgres

BUCKET = "conveyor-sources"
#: The checkout step reads the source on the sandbox worker's host, the check step on
#: the scan worker's: each host unpacks the archive the first time a step opens it there.
PIPELINE = textwrap.dedent("""\
    pipelines:
      from-source:
        steps:
          - name: build
            type: step.shell_exec
            config:
              commands:
                - cat message.txt
                - test -x tools/run.sh && ./tools/run.sh
                - test "$(readlink docs/latest)" = "../message.txt"
                - cat docs/latest
                - test ! -e .git && test ! -e __pycache__
                - echo "greeting=$(cat message.txt)" >> "$CONVEYOR_OUTPUT"
          - name: check
            type: step.shell_exec
            queue: scan
            config:
              commands:
                - test "$(cat message.txt)" = "hello from the laptop"
                - echo "checked on $(hostname)"
""")


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        s3 = client(url)
        s3.create_bucket(Bucket=BUCKET)
        yield url
        empty(s3, BUCKET)


@pytest.fixture
def running(
    tmp_path: Path, pg_store: SqlStore, pg_database: str, s3_endpoint: str
) -> Iterator[tuple[Server, Stack]]:
    """The API (its own data dir) and two worker hosts (sandbox, scan), sharing only S3."""
    shared = {
        "CONVEYOR_SECRET_KEY": Fernet.generate_key().decode(),
        "CONVEYOR_ARTIFACT_STORE": "s3",
        "CONVEYOR_S3_BUCKET": BUCKET,
        "CONVEYOR_S3_ENDPOINT_URL": s3_endpoint,
        "CONVEYOR_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CONVEYOR_MAX_SOURCE_BYTES": str(256 * 1024),
    }
    with redis_database() as broker, stack(pg_database, broker, tmp_path, **shared) as workers:
        hosts = []
        for name in ("sandbox", "scan", "control"):
            workers.overrides["CONVEYOR_DATA_DIR"] = str(tmp_path / f"host-{name}")
            hosts.append(workers.worker(name, name))
        workers.overrides["CONVEYOR_DATA_DIR"] = str(tmp_path / "api-host")
        workers.wait_ready(*hosts)
        made = conveyor("token", "create", "--role", "operator", env=workers.env)
        assert made.returncode == 0, made.stderr
        with api_server(tmp_path, workers.env) as server:
            server.token = made.stdout.strip()
            yield server, workers


def source_dir(root: Path) -> Path:
    src = root / "laptop-checkout"
    (src / "tools").mkdir(parents=True)
    (src / "docs").mkdir()
    (src / ".git").mkdir()
    (src / "__pycache__").mkdir()
    (src / "message.txt").write_text("hello from the laptop")
    (src / "tools/run.sh").write_text("#!/bin/sh\necho tool ran\n")
    (src / "tools/run.sh").chmod(0o755)
    (src / "docs/latest").symlink_to("../message.txt")
    (src / ".git/HEAD").write_text("ref: refs/heads/main")
    (src / "__pycache__/x.pyc").write_bytes(b"\0")
    return src


def log_text(server: Server, run_id: str, step: str) -> str:
    logs = server.call("GET", f"/runs/{run_id}/steps/{step}/logs").json
    return "\n".join(line["text"] for line in logs["items"])


def test_submit_with_a_source_runs_on_workers_that_share_no_directory(
    running: tuple[Server, Stack], tmp_path: Path
) -> None:
    server, workers = running
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    src = source_dir(tmp_path)

    done = server.conveyor(
        "submit", str(tmp_path / "pipeline.yaml"), "--source", str(src), "--watch", timeout=120
    )

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{workers.logs()}"
    run_id = done.stdout.split()[1]
    run = server.call("GET", f"/runs/{run_id}").json
    assert run["status"] == "succeeded"
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["build"]["outputs"]["greeting"] == "hello from the laptop"
    build = log_text(server, run_id, "build")
    assert "hello from the laptop" in build and "tool ran" in build
    events = server.call("GET", f"/runs/{run_id}/events").json["items"]
    owners = {e["step_key"]: e["payload"]["owner"] for e in events if e["type"] == "step.running"}
    assert owners["build"].startswith("sandbox@") and owners["check"].startswith("scan@")
    # Each host unpacked the source itself: the API's data dir never held a workspace.
    assert not (tmp_path / "api-host" / "workspaces" / run_id).exists()
    # The archive is kept with the run's artifacts in S3, and is not one of them.
    s3 = client(workers.env["CONVEYOR_S3_ENDPOINT_URL"])
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert [n for n in names if run_id in n] == [f"{_prefix(workers)}{run_id}/.source.tar.gz"]
    assert server.call("GET", f"/runs/{run_id}/artifacts").json["items"] == []


def multipart(body: dict[str, Any], source: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="run"\r\n'
        "Content-Type: application/json\r\n\r\n".encode(),
        json.dumps(body).encode(),
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="source"; '
        'filename="s.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n'.encode(),
        source,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def hostile() -> bytes:
    """A link to the workspace's parent, then a file written through it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        link = tarfile.TarInfo("up")
        link.type, link.linkname = tarfile.SYMTYPE, ".."
        tar.addfile(link)
        planted = tarfile.TarInfo("up/planted")
        planted.size = 4
        tar.addfile(planted, io.BytesIO(b"evil"))
    return raw.getvalue()


def test_a_hostile_source_fails_the_first_step_in_one_line(
    running: tuple[Server, Stack], tmp_path: Path
) -> None:
    server, _ = running
    data, media = multipart({"definition": PIPELINE}, hostile())
    answer = server.call("POST", "/runs", data=data, headers={"Content-Type": media})
    assert answer.status == 201, answer.raw
    run_id = answer.json["id"]

    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = server.call("GET", f"/runs/{run_id}").json
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    run = eventually(ended, 60, f"run {run_id} to end")
    assert run["status"] == "failed", run
    build = {s["key"]: s for s in run["steps"]}["build"]
    assert build["status"] == "failed"
    error = build["last_error"]
    assert error.startswith("the run's source archive is refused: ") and "\n" not in error, error
    assert "through the link" in error
    host = tmp_path / "host-sandbox"
    assert not list(host.rglob("planted")) and not (host / "workspaces" / run_id).exists()


def test_a_source_past_the_limit_is_refused_by_the_api(
    running: tuple[Server, Stack], tmp_path: Path
) -> None:
    server, _ = running
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    src = source_dir(tmp_path)
    (src / "noise.bin").write_bytes(os.urandom(300 * 1024))  # past the 256 KiB limit

    done = server.conveyor("submit", str(tmp_path / "pipeline.yaml"), "--source", str(src))

    assert done.returncode == 1
    assert "CONVEYOR_MAX_SOURCE_BYTES" in done.stderr, done.stderr
    assert server.call("GET", "/runs").json["items"] == []


def _prefix(workers: Stack) -> str:
    prefix = workers.settings.s3_prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def test_in_s3_the_source_is_no_artifact_and_goes_with_the_runs_artifacts(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(
        data_dir=tmp_path / "data",
        s3_bucket=BUCKET,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
    )
    store = S3ArtifactStore(settings)
    archive = tmp_path / "s.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really")
    report = tmp_path / "report.txt"
    report.write_text("report")
    store.put_source("run-9", archive)
    store.put("run-9", "reports/report.txt", report)

    assert [a.key for a in store.list("run-9")] == ["reports/report.txt"]
    artifact, stream = store.open_source("run-9")
    with stream:
        assert stream.read() == archive.read_bytes()
    assert artifact.size == archive.stat().st_size
    assert store.delete_run("run-9") == 1  # the one artifact; the source went with it
    with pytest.raises(ArtifactNotFound):
        store.open_source("run-9")
