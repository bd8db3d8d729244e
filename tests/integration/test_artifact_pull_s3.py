"""``step.artifact_pull`` with ``source: s3``, against a real S3 API server (moto) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound
from conveyor.orchestrator.settings import Settings
from conveyor.providers.s3 import S3Objects
from tests.integration.s3_kit import client, empty, moto_server
from tests.unit.engine_kit import log_text, open_engine, pipeline, run, step

BUCKET = "team-tools"
TOOL = b"echo tool v2\n"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server of this module's own."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    """The bucket ``team-tools`` holding ``bin/tool.sh``, emptied afterwards."""
    s3 = client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="bin/tool.sh", Body=TOOL)
    yield s3
    empty(s3, BUCKET)


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The operator's S3 settings: the moto endpoint; credentials from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return settings.model_copy(update={"s3_endpoint_url": s3_endpoint, "s3_region": "us-east-1"})


def pull(config: str) -> str:
    return pipeline(f"""
        - {{name: get, type: step.artifact_pull, config: {{source: s3, dest: tools/tool.sh, {config}}}}}
        - {{name: use, type: step.shell_exec, config: {{commands: ["sh tools/tool.sh"]}}}}
    """)


def test_an_s3_object_is_pulled_into_the_workspace(s3: Any, s3_settings: Settings) -> None:
    """Given an object in a bucket, when a pipeline pulls it, then the next step uses it."""
    with open_engine(s3_settings) as engine:
        result = run(engine, pull(f"bucket: {BUCKET}, key: bin/tool.sh"))

        assert result.status == "succeeded", result.error
        assert log_text(engine, result.id, "use")[-1] == "tool v2"
        outputs = step(engine, result.id, "get").outputs
    assert outputs == {
        "source": "s3",
        "bucket": BUCKET,
        "key": "bin/tool.sh",
        "dest": "tools/tool.sh",
        "size": len(TOOL),
        "bytes_written": len(TOOL),
        "checksum": hashlib.sha256(TOOL).hexdigest(),
    }


def test_the_bucket_defaults_to_the_operators(s3: Any, s3_settings: Settings) -> None:
    """Given CONVEYOR_S3_BUCKET, a pull that names only the key reads from that bucket."""
    with open_engine(s3_settings.model_copy(update={"s3_bucket": BUCKET})) as engine:
        result = run(engine, pull("key: bin/tool.sh"))
        assert result.status == "succeeded", result.error


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (f"bucket: {BUCKET}, key: bin/nope.sh", f"s3://{BUCKET}/bin/nope.sh: no such object"),
        (
            "bucket: no-such-bucket, key: bin/tool.sh",
            "s3://no-such-bucket/bin/tool.sh: no such bucket",
        ),
        ("key: bin/tool.sh", "source s3 needs a bucket (or the operator's CONVEYOR_S3_BUCKET)"),
    ],
)
def test_a_missing_object_or_bucket_fails_the_step_in_one_line(
    s3: Any, s3_settings: Settings, config: str, reason: str
) -> None:
    with open_engine(s3_settings) as engine:
        result = run(engine, pull(config))

    assert result.status == "failed"
    assert reason in (result.error or "") and "\n" not in (result.error or "")


def test_an_object_over_the_cap_is_refused_and_leaves_nothing(
    s3: Any, s3_settings: Settings, tmp_path: Path
) -> None:
    """Given the operator's 10-byte cap, a 13-byte object is refused before any byte is written."""
    objects = S3Objects(s3_settings)
    dest = tmp_path / "out" / "tool.sh"

    with pytest.raises(ArtifactError, match=r"is 13 bytes; the limit is 10"):
        objects.fetch(BUCKET, "bin/tool.sh", dest, limit=10)
    assert not (tmp_path / "out").exists()


def test_big_objects_are_streamed_to_disk_not_held_in_memory(
    s3: Any, s3_settings: Settings, tmp_path: Path
) -> None:
    """Given a 48 MiB object, fetching it keeps Python's memory far below its size."""
    big = tmp_path / "big"
    with open(big, "wb") as out:
        for _ in range(48):
            out.write(os.urandom(1024 * 1024))
    s3.upload_file(str(big), BUCKET, "big.bin")
    objects = S3Objects(s3_settings)
    objects.client  # made before measuring: boto3's models are not the download's memory  # noqa: B018

    tracemalloc.start()
    try:
        found = objects.fetch(BUCKET, "big.bin", tmp_path / "big.out", limit=1024**3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert found.size == 48 * 1024 * 1024
    assert found.checksum == hashlib.sha256(big.read_bytes()).hexdigest()
    assert peak < 30 * 1024 * 1024


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that checks IAM, and the keys of a user allowed nothing."""
    # The first five requests (the set-up below) pass unchecked; every later one is checked.
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "5"}) as url:
        admin, iam = client(url), client(url, "iam")
        admin.create_bucket(Bucket=BUCKET)
        admin.put_object(Bucket=BUCKET, Key="secret.txt", Body=b"no")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield (
            url,
            {
                "aws_access_key_id": key["AccessKeyId"],
                "aws_secret_access_key": key["SecretAccessKey"],
            },
        )


def test_denied_access_is_one_clear_error(
    settings: Settings, guarded: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """Given credentials S3 refuses, the fetch says access was denied, and writes nothing."""
    url, nobody = guarded
    objects = S3Objects(settings, client=client(url, **nobody))

    with pytest.raises(
        ArtifactError, match=rf"s3://{BUCKET}/secret.txt: access denied \(AccessDenied"
    ) as caught:
        objects.fetch(BUCKET, "secret.txt", tmp_path / "secret.txt", limit=100)
    assert not isinstance(caught.value, ArtifactNotFound)
    assert not (tmp_path / "secret.txt").exists()
