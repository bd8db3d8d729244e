"""The artifact store tests of tests/unit/, run against a real S3 API server (moto) on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.settings import Settings
from conveyor.providers.artifacts_s3 import S3ArtifactStore
from tests.conftest import missing
from tests.unit.test_artifact_store import *  # noqa: F403  (pytest collects the imported tests)

BUCKET = "conveyor-artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server of this module's own."""
    # Its own process: the memory test must count the client's memory, not the server's.
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, server)
        yield url
    finally:
        server.kill()
        server.wait()


def _wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            missing("moto[server]", "the moto server exited at start")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    missing("moto[server]", "the moto server did not answer")


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.fixture
def artifacts(settings: Settings, s3_client: Any, s3_endpoint: str) -> ArtifactStore:
    """The S3 store, on the moto server."""
    s3 = settings.model_copy(update={"s3_bucket": BUCKET, "s3_endpoint_url": s3_endpoint})
    return S3ArtifactStore(s3, client=s3_client)


@pytest.fixture
def corrupt(s3_client: Any) -> Callable[[str, str, bytes], None]:
    """Overwrite an object's bytes but keep the checksum Conveyor stored."""

    def overwrite(run_id: str, key: str, data: bytes) -> None:
        name = f"conveyor/{run_id}/{key}"
        head = s3_client.head_object(Bucket=BUCKET, Key=name)
        s3_client.put_object(Bucket=BUCKET, Key=name, Body=data, Metadata=head["Metadata"])

    return overwrite


def test_an_unreachable_s3_is_one_clear_error(settings: Settings, tmp_path: Any) -> None:
    import boto3

    closed = f"http://127.0.0.1:{_free_port()}"
    client = boto3.client(
        "s3",
        endpoint_url=closed,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    store = S3ArtifactStore(settings.model_copy(update={"s3_bucket": BUCKET}), client=client)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"S3 request for k failed: Could not connect"):  # noqa: F405
        store.put("3f0c2a1e-aaaa", "k", tmp_path / "f")
