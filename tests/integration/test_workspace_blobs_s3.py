"""A run's workspace handed between two hosts through S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import WorkspaceBlobs
from conveyor.orchestrator.errors import ArtifactNotFound, WorkspaceRefused
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing.workspaces import MemoryWorkspaceRecords
from conveyor.orchestrator.workspaces import WorkspaceHandoff
from conveyor.providers.s3 import S3ArtifactStore
from tests.integration.s3_kit import client, empty, moto_server

BUCKET = "conveyor-workspaces"
RUN = "3f0c2a1e-s3run"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    s3 = client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    empty(s3, BUCKET)


class Counted(S3ArtifactStore):
    """The S3 store, counting the requests it sends."""

    requests: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = []
        self.client.meta.events.register(
            "before-call.s3.*", lambda model, **_: self.requests.append(model.name)
        )


@pytest.fixture
def store(settings: Settings, s3: Any, s3_endpoint: str) -> Counted:
    conf = settings.model_copy(update={"s3_bucket": BUCKET, "s3_endpoint_url": s3_endpoint})
    return Counted(conf, client=client(s3_endpoint))


def handoff(
    base: Path, name: str, store: Counted, heads: MemoryWorkspaceRecords
) -> WorkspaceHandoff:
    data = base / name
    return WorkspaceHandoff(data / "ws", data / "state", lambda: store, heads, name)


def test_a_workspace_travels_through_s3_and_goes_with_the_run(
    tmp_path: Path, store: Counted, s3: Any
) -> None:
    """Given host A's files in S3, Then host B gets them; deleting the run removes them."""
    heads = MemoryWorkspaceRecords()
    a, b = handoff(tmp_path, "a", store, heads), handoff(tmp_path, "b", store, heads)
    base = a.prepare(RUN)
    ws = a.workspace(RUN)
    (ws / "bin").mkdir(parents=True)
    (ws / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (ws / "bin" / "tool").chmod(0o755)
    (ws / "big").write_bytes(bytes(range(256)) * 40_000)  # 10 MB: multipart
    (ws / "link").symlink_to("bin/tool")
    published = a.publish(RUN, base)

    b.prepare(RUN)

    there = b.workspace(RUN)
    assert (there / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (there / "big").read_bytes() == (ws / "big").read_bytes()
    assert (there / "link").readlink() == Path("bin/tool")
    assert published.files_uploaded == 2
    assert store.list(RUN) == []  # not artifacts
    assert store.delete_run(RUN) == 0
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_many_blobs_are_asked_about_with_one_listing(store: Counted, tmp_path: Path) -> None:
    """Given 2,000 digests, When the store is asked which it lacks, Then it lists, not HEADs."""
    (tmp_path / "f").write_bytes(b"x")
    held = hashlib.sha256(b"x").hexdigest()
    store.put_blob(RUN, held, tmp_path / "f")
    asked = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(2000)] + [held]
    store.requests.clear()

    missing = store.missing_blobs(RUN, asked)

    assert missing == set(asked) - {held}
    assert store.requests == ["ListObjectsV2"]
    assert store.missing_blobs(RUN, [held]) == set()


def test_a_blob_altered_in_s3_is_refused(tmp_path: Path, store: Counted, s3: Any) -> None:
    """Given a blob overwritten in the bucket, Then host B refuses it in one line."""
    heads = MemoryWorkspaceRecords()
    a, b = handoff(tmp_path, "a", store, heads), handoff(tmp_path, "b", store, heads)
    base = a.prepare(RUN)
    a.workspace(RUN).mkdir(parents=True)
    (a.workspace(RUN) / "f").write_text("genuine")
    a.publish(RUN, base)
    digest = hashlib.sha256(b"genuine").hexdigest()
    s3.put_object(Bucket=BUCKET, Key=f"conveyor/{RUN}/.blobs/{digest}", Body=b"tampered")

    with pytest.raises(WorkspaceRefused, match="does not match its digest"):
        b.prepare(RUN)

    s3.delete_object(Bucket=BUCKET, Key=f"conveyor/{RUN}/.blobs/{digest}")
    with pytest.raises(ArtifactNotFound):
        store.open_blob(RUN, digest)
    with pytest.raises(WorkspaceRefused, match="missing from the artifact store"):
        b.prepare(RUN)


def test_the_s3_store_answers_to_the_workspace_blobs_protocol(store: Counted) -> None:
    assert isinstance(store, WorkspaceBlobs)


def test_many_small_files_travel_through_s3_as_one_pack_and_one_ranged_get(
    tmp_path: Path, store: Counted, s3: Any
) -> None:
    """Given 40 small files, Then one PutObject stores them and one GetObject fetches them;
    a pack altered in the bucket is refused."""
    heads = MemoryWorkspaceRecords()
    a, b = handoff(tmp_path, "a", store, heads), handoff(tmp_path, "b", store, heads)
    base = a.prepare(RUN)
    ws = a.workspace(RUN)
    ws.mkdir(parents=True)
    for n in range(40):
        (ws / f"f{n:02}.txt").write_text(f"content {n}\n" * (n + 1))
    store.requests.clear()
    published = a.publish(RUN, base)
    puts = [r for r in store.requests if r == "PutObject"]

    store.requests.clear()
    b.prepare(RUN)

    assert published.files_uploaded == 40
    assert puts == ["PutObject", "PutObject"]  # the pack, the manifest
    assert store.requests.count("GetObject") == 2  # the manifest, the pack's range
    assert sorted(p.name for p in b.workspace(RUN).iterdir()) == [f"f{n:02}.txt" for n in range(40)]
    assert (b.workspace(RUN) / "f07.txt").read_text() == "content 7\n" * 8

    (name,) = [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"] if "/.packs/" in o["Key"]
    ]
    s3.put_object(Bucket=BUCKET, Key=name, Body=b"tampered")
    c = handoff(tmp_path, "c", store, heads)
    with pytest.raises(WorkspaceRefused, match="ends before it"):
        c.prepare(RUN)
    assert store.delete_workspace(RUN) == 2


def test_a_read_past_the_end_of_a_pack_in_s3_gives_what_is_there(store: Counted) -> None:
    digest = store.put_pack(RUN, b"0123456789")

    assert digest == hashlib.sha256(b"0123456789").hexdigest()
    assert store.read_pack(RUN, digest, 2, 3) == b"234"
    assert store.read_pack(RUN, digest, 8, 10) == b"89"
    assert store.read_pack(RUN, digest, 20, 5) == b""
    with pytest.raises(ArtifactNotFound):
        store.read_pack(RUN, "00" * 32, 0, 1)
