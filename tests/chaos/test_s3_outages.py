"""An S3 artifact store that fails on its side: an outage (503), never the client's fault.

S3 (and MinIO, R2...) answers ``503 SlowDown``, ``500 InternalError`` or
``503 ServiceUnavailable`` when it is overloaded or down. Those are the artifact store's
outage, a 503 over the API like an endpoint that does not answer at all, not a 422 that
tells the client to fix its request. An object in the run's folder that Conveyor did
not store does not hide the run's real artifacts, and removing a run's artifacts while
S3 is away is the same clear error as any other request.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from conveyor.orchestrator.errors import ArtifactError, ArtifactStoreUnavailable
from conveyor.orchestrator.settings import Settings
from conveyor.providers.s3 import S3ArtifactStore, S3Objects
from conveyor.providers.s3 import artifacts as s3_artifacts

RUN = "3f0c2a1e-aaaa"
SHA = "0" * 64


@pytest.fixture
def s3() -> Any:
    """A real boto3 client that never reaches the network: its answers are stubbed."""
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _store(settings: Settings, client: Any) -> S3ArtifactStore:
    return S3ArtifactStore(settings.model_copy(update={"s3_bucket": "b"}), client=client)


@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("ServiceUnavailable", 503), ("InternalError", 500)],
)
def test_s3_answering_5xx_is_an_outage_not_a_bad_request(
    settings: Settings, s3: Any, code: str, status: int
) -> None:
    store = _store(settings, s3)
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", code, "overloaded", http_status_code=status)
        with pytest.raises(ArtifactStoreUnavailable, match="S3 answered"):
            store.open(RUN, "report.txt")


def test_s3_refusing_a_request_is_still_an_artifact_error(settings: Settings, s3: Any) -> None:
    store = _store(settings, s3)
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", "AccessDenied", "no", http_status_code=403)
        with pytest.raises(ArtifactError) as caught:
            store.open(RUN, "report.txt")
    assert not isinstance(caught.value, ArtifactStoreUnavailable)


def test_an_object_conveyor_did_not_store_does_not_hide_the_run_s_artifacts(
    settings: Settings, s3: Any
) -> None:
    store = _store(settings, s3)
    base = f"conveyor/{RUN}/"
    listing = {"Contents": [{"Key": base + "foreign"}, {"Key": base + "ours"}], "KeyCount": 2}
    with Stubber(s3) as stub:
        stub.add_response("list_objects_v2", listing)
        stub.add_response("head_object", {"ContentLength": 3, "Metadata": {}})
        stub.add_response("head_object", {"ContentLength": 5, "Metadata": {"sha256": SHA}})
        found = store.list(RUN)
    assert [(a.key, a.size, a.checksum) for a in found] == [("ours", 5, SHA)]


def test_removing_a_run_s_artifacts_while_s3_is_away_is_one_clear_error(
    settings: Settings, s3: Any, tmp_path: Path
) -> None:
    store = _store(settings, s3)
    with Stubber(s3) as stub:
        stub.add_client_error("list_objects_v2", "ServiceUnavailable", http_status_code=503)
        with pytest.raises(ArtifactStoreUnavailable):
            store.delete_run(RUN)


@pytest.fixture
def silent_endpoint() -> Any:
    """An S3 endpoint on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


def _within(seconds: float, call: Any) -> BaseException | None:
    """What ``call`` raised, failing the test if it has not returned after ``seconds``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"still waiting after {time.monotonic() - started:.0f} s"
    return outcome[0]


def test_an_s3_endpoint_that_never_answers_is_an_outage_within_seconds(
    settings: Settings, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3's defaults wait 60 s per read, up to 5 times: an API request held 5 minutes."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setattr(s3_artifacts, "READ_TIMEOUT", 1.0)
    update = {"s3_bucket": "b", "s3_endpoint_url": silent_endpoint, "s3_region": "us-east-1"}
    configured = settings.model_copy(update=update)
    store = S3ArtifactStore(configured)

    raised = _within(20, lambda: store.open(RUN, "report.txt"))

    assert isinstance(raised, ArtifactStoreUnavailable), raised
    pulled = _within(
        20, lambda: S3Objects(configured).fetch("b", "k", Path("/nonexistent/x"), limit=1)
    )
    assert isinstance(pulled, ArtifactError), pulled
