"""``source: s3`` pulls without a server: the step through the provider's in-memory twin
(``MemoryObjects``), the provider through a fake S3 client whose downloads go wrong
half-way."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from urllib3.exceptions import ProtocolError

from conveyor.orchestrator.contracts import ObjectSource
from conveyor.orchestrator.errors import ArtifactError, StepFailed
from conveyor.orchestrator.plugins import Providers
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing import MemoryObjects
from conveyor.providers.s3 import S3Objects
from conveyor.steps.artifact_pull import ArtifactPull, ArtifactPullConfig
from tests.unit.fakes import FakeContext


class Broken(io.RawIOBase):
    """A response body that hands out ``good`` bytes, then fails like a dropped connection."""

    def __init__(self, good: bytes) -> None:
        self.data = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        piece = self.data.read(size)
        if not piece:
            raise ProtocolError("Connection broken: IncompleteRead(5 bytes read, 95 more expected)")
        return piece


@dataclass
class FakeS3:
    """A boto3 S3 client that answers get_object with the given body and length."""

    body: Any
    length: int

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": self.body, "ContentLength": self.length, "LastModified": datetime.now(UTC)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_download_cut_half_way_leaves_nothing(settings: Settings, tmp_path: Path) -> None:
    """Given a connection that drops half-way, the fetch fails in one line and writes nothing."""
    objects = S3Objects(settings, client=FakeS3(Broken(b"12345"), 100))

    with pytest.raises(ArtifactError, match=r"^s3://b/k: .*Connection broken") as caught:
        objects.fetch("b", "k", tmp_path / "out" / "k", limit=1000)
    assert "\n" not in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_an_object_longer_than_it_said_stops_at_the_cap(settings: Settings, tmp_path: Path) -> None:
    """Given an object that claims 5 bytes but streams 5000, the cap stops it and nothing is kept."""
    objects = S3Objects(settings, client=FakeS3(io.BytesIO(b"x" * 5000), 5))

    with pytest.raises(ArtifactError, match=r"^s3://b/k is larger than the 1000-byte limit$"):
        objects.fetch("b", "k", tmp_path / "out" / "k", limit=1000)
    assert leftovers(tmp_path / "out") == []


def test_a_fetch_replaces_the_destination_whole(settings: Settings, tmp_path: Path) -> None:
    """Given an older file at the destination, a fetch swaps in the new content at once."""
    dest = tmp_path / "k"
    dest.write_bytes(b"old")
    found = S3Objects(settings, client=FakeS3(io.BytesIO(b"new!"), 4)).fetch(
        "b", "k", dest, limit=10
    )

    assert dest.read_bytes() == b"new!" and found.size == 4
    assert leftovers(tmp_path) == ["k"]


def test_the_s3_provider_is_installed_for_steps(settings: Settings) -> None:
    """Given the installed package, ``ctx.provider("s3")`` finds an ObjectSource."""
    assert isinstance(Providers(settings).get("s3"), ObjectSource)


def test_the_twin_is_an_object_source() -> None:
    objects: ObjectSource = MemoryObjects()
    assert isinstance(objects, ObjectSource)


@dataclass
class S3Context(FakeContext):
    """A context whose ``s3`` provider is the twin, with the operator's bucket and cap."""

    objects: MemoryObjects = field(default_factory=MemoryObjects)
    operator_bucket: str | None = None

    @property
    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir, s3_bucket=self.operator_bucket, max_download_bytes=777
        )

    def provider(self, name: str) -> Any:
        assert name == "s3"
        return self.objects


def test_the_step_places_the_object_in_the_workspace(tmp_path: Path) -> None:
    """Given an object, the step writes it at dest and reports where it came from."""
    ctx = S3Context(tmp_path, objects=MemoryObjects({("tools", "bin/tool"): b"#!/bin/sh\n"}))
    config = ArtifactPullConfig(source="s3", bucket="tools", key="bin/tool", dest="t/tool")

    outputs = ArtifactPull().run(ctx, config)

    assert (ctx.workspace / "t" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert ctx.objects.asked == [("tools", "bin/tool", 777)]
    assert (outputs["bucket"], outputs["size"], outputs["checksum"]) == ("tools", 10, "c0ffee")
    assert ctx.log.lines == ["fetched s3://tools/bin/tool to t/tool (10 bytes)"]


def test_the_step_uses_the_operators_bucket_and_fails_in_its_words(tmp_path: Path) -> None:
    ctx = S3Context(tmp_path, operator_bucket="shared")
    config = ArtifactPullConfig(source="s3", key="nope", dest="x")

    with pytest.raises(StepFailed, match=r"^s3://shared/nope: no such object$"):
        ArtifactPull().run(ctx, config)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"source": "s3", "dest": "x"}, "source s3 needs a key"),
        (
            {"source": "url", "url": "https://example.com/x", "bucket": "b", "dest": "x"},
            "bucket is for source s3",
        ),
    ],
)
def test_an_s3_pull_needs_a_key_and_only_it_takes_a_bucket(
    config: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        ArtifactPullConfig.model_validate(config)
