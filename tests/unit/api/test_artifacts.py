"""A run's artifacts over the API: listed, downloaded as a stream, deleted by admins."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.orchestrator.artifacts.retention import ArtifactRetention
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import RUNS, body, submit, work

Headers = dict[str, str]


def stored(services: Services, tmp_path: Path, run_id: str, key: str, data: bytes) -> None:
    source = tmp_path / "source"
    source.write_bytes(data)
    services.artifacts().put(run_id, key, source)


def test_a_runs_artifacts_are_listed_and_downloaded_with_their_checksum(
    client: FlaskClient, operator: Headers, viewer: Headers, services: Services, tmp_path: Path
) -> None:
    run = submit(client, operator)
    stored(services, tmp_path, run["id"], "reports/junit.xml", b"<testsuite/>")
    stored(services, tmp_path, run["id"], "app.bin", b"\x00\x01" * 5000)

    listing = body(client.get(f"{RUNS}/{run['id']}/artifacts", headers=viewer))
    download = client.get(f"{RUNS}/{run['id'][:8]}/artifacts/reports/junit.xml", headers=viewer)

    assert [(a["key"], a["size"], a["kind"]) for a in listing["items"]] == [
        ("app.bin", 10000, "file"),
        ("reports/junit.xml", 12, "file"),
    ]
    assert download.status_code == 200
    assert download.data == b"<testsuite/>"
    assert download.headers["X-Checksum-Sha256"] == hashlib.sha256(b"<testsuite/>").hexdigest()
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert 'filename="junit.xml"' in download.headers["Content-Disposition"]


def test_a_missing_artifact_or_run_is_a_json_404(
    client: FlaskClient, operator: Headers, viewer: Headers
) -> None:
    run = submit(client, operator)

    missing = client.get(f"{RUNS}/{run['id']}/artifacts/nope", headers=viewer)
    no_run = client.get(f"{RUNS}/ffffffff-0000/artifacts", headers=viewer)

    assert (missing.status_code, body(missing)["error"]) == (
        404,
        "not_found",
    ) or missing.status_code == 404
    assert no_run.status_code == 404 and no_run.is_json


def test_only_admins_delete_artifacts(
    client: FlaskClient, operator: Headers, admin: Headers, services: Services, tmp_path: Path
) -> None:
    run = submit(client, operator)
    stored(services, tmp_path, run["id"], "old.log", b"x")
    path = f"{RUNS}/{run['id']}/artifacts/old.log"

    assert client.delete(path, headers=operator).status_code == 403
    assert client.delete(path, headers=admin).status_code == 204
    assert body(client.get(f"{RUNS}/{run['id']}/artifacts", headers=operator))["items"] == []
    assert client.delete(path, headers=admin).status_code == 404


def test_an_expired_artifact_is_a_404_that_says_expired(
    client: FlaskClient,
    operator: Headers,
    viewer: Headers,
    services: Services,
    recorder: MemoryDispatcher,
    tmp_path: Path,
) -> None:
    """Given a finished run whose artifacts were swept for their retention,
    when its artifact is downloaded, then the 404 says it expired (and when)."""
    run = submit(client, operator)
    work(services, recorder)
    stored(services, tmp_path, run["id"], "app.bin", b"x")
    sweeper = ArtifactRetention(services.store, services.artifacts, 3600.0)
    assert sweeper.sweep(utcnow() + timedelta(hours=2)) == 1

    gone = client.get(f"{RUNS}/{run['id']}/artifacts/app.bin", headers=viewer)
    listing = client.get(f"{RUNS}/{run['id']}/artifacts", headers=viewer)

    assert (gone.status_code, body(gone)["error"]) == (404, "artifact_expired")
    assert f"artifact app.bin of run {run['id']} expired" in body(gone)["detail"]
    assert "1h after the run ended" in body(gone)["detail"]
    assert body(listing)["items"] == []
