"""The artifact store tests of tests/unit/, run against a real S3 API server (moto) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.settings import Settings
from conveyor.providers.s3 import S3ArtifactStore
from tests.integration.s3_kit import client, empty, free_port, moto_server
from tests.unit.test_artifact_store import *  # noqa: F403  (pytest collects the imported tests)

BUCKET = "conveyor-artifacts"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server of this module's own."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    s3 = client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    empty(s3, BUCKET)


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
    closed = client(f"http://127.0.0.1:{free_port()}")
    store = S3ArtifactStore(settings.model_copy(update={"s3_bucket": BUCKET}), client=closed)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"S3 request for k failed: Could not connect"):  # noqa: F405
        store.put("3f0c2a1e-aaaa", "k", tmp_path / "f")
