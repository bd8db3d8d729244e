"""Artifact stores: the same behaviour on local disk (here) and on S3 (integration/)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound, ChecksumMismatch

RUN = "3f0c2a1e-1111-4222-8333-944455556666"


def a_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_artifact_comes_back_byte_for_byte_with_its_checksum(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    stored = artifacts.put(RUN, "dist/app.tar", a_file(tmp_path, "app.tar", data))

    got = artifacts.get(RUN, "dist/app.tar", tmp_path / "out" / "app.tar")

    assert (tmp_path / "out" / "app.tar").read_bytes() == data
    assert stored.checksum == got.checksum == hashlib.sha256(data).hexdigest()
    assert (stored.size, got.size) == (300_000, 300_000)
    assert got.created_at.tzinfo is not None


def test_a_run_lists_its_artifacts_by_key(artifacts: ArtifactStore, tmp_path: Path) -> None:
    for key in ("reports/junit.xml", "app-1.2.tar", "reports/coverage.xml"):
        artifacts.put(RUN, key, a_file(tmp_path, "f", key.encode()))

    assert [a.key for a in artifacts.list(RUN)] == [
        "app-1.2.tar",
        "reports/coverage.xml",
        "reports/junit.xml",
    ]
    assert artifacts.list("0000aaaa-other-run") == []


@pytest.mark.parametrize(
    "key",
    ["../escape", "/etc/passwd", "a/../../b", "nul\x00byte", "", "a//b", ".", "a\\b", "x" * 600],
)
def test_unsafe_keys_are_refused(artifacts: ArtifactStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(ArtifactError):
        artifacts.put(RUN, key, a_file(tmp_path, "f", b"x"))


def test_storing_a_key_again_replaces_it(artifacts: ArtifactStore, tmp_path: Path) -> None:
    artifacts.put(RUN, "report", a_file(tmp_path, "one", b"one"))
    second = artifacts.put(RUN, "report", a_file(tmp_path, "two", b"two!"))

    assert [(a.key, a.size, a.checksum) for a in artifacts.list(RUN)] == [
        ("report", 4, second.checksum)
    ]
    artifacts.get(RUN, "report", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"two!"


def test_a_failed_upload_leaves_nothing_behind(artifacts: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        artifacts.put(RUN, "ghost", tmp_path / "does-not-exist")

    assert artifacts.list(RUN) == []
    with pytest.raises(ArtifactNotFound):
        artifacts.get(RUN, "ghost", tmp_path / "ghost")


def test_a_corrupted_artifact_is_an_error_not_a_file(
    artifacts: ArtifactStore, tmp_path: Path, corrupt
) -> None:  # type: ignore[no-untyped-def]
    artifacts.put(RUN, "bin/server", a_file(tmp_path, "server", b"real bytes"))
    corrupt(RUN, "bin/server", b"tampered!!")

    with pytest.raises(ChecksumMismatch):
        artifacts.get(RUN, "bin/server", tmp_path / "server.out")
    assert not (tmp_path / "server.out").exists()


def test_deleting_one_or_all_of_a_runs_artifacts(artifacts: ArtifactStore, tmp_path: Path) -> None:
    for key in ("a", "b/c", "d"):
        artifacts.put(RUN, key, a_file(tmp_path, "f", b"x"))

    artifacts.delete(RUN, "a")
    assert [a.key for a in artifacts.list(RUN)] == ["b/c", "d"]
    with pytest.raises(ArtifactNotFound):
        artifacts.delete(RUN, "a")
    assert artifacts.delete_run(RUN) == 2
    assert artifacts.list(RUN) == []


def test_big_files_are_streamed_not_held_in_memory(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as out:
        for _ in range(48):
            out.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    try:
        artifacts.put(RUN, "big", big)
        artifacts.get(RUN, "big", tmp_path / "big.out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (tmp_path / "big.out").stat().st_size == 48 * 1024 * 1024
    assert peak < 30 * 1024 * 1024  # a 48 MiB file never sits in memory whole
