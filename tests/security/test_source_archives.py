"""Hostile source archives (``conveyor submit --source``, ``POST /runs`` with ``source``).

A worker unpacks a run's source archive into the run's workspace. Whatever the archive
holds, nothing is written outside the workspace, no link leads out of it, no device or
hard link is made, and its size and number of entries are bounded before they are read.
A refused archive fails the step with one line and leaves no workspace behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from conveyor.orchestrator.artifacts import validate_key
from conveyor.orchestrator.engine.source_archive import (
    Limits,
    WorkspaceSeeder,
    pack_source,
    unpack_source,
)
from conveyor.orchestrator.errors import ArtifactError, SourceRefused, StepFailed
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local.artifacts import LocalArtifactStore
from tests.security.api_kit import ONE_STEP, RUNS, Headers, json_of

LIMITS = Limits(max_bytes=10 * 1024 * 1024, max_files=100)
Member = Callable[[tarfile.TarFile], None]


def archive(*members: Member) -> bytes:
    """A gzipped tar made of ``members`` (each adds itself to the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for add in members:
            add(tar)
    return raw.getvalue()


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    return add


def special(name: str, kind: bytes, linkname: str = "", size: int = 0) -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = kind, linkname, 0o777
        if kind == tarfile.DIRTYPE:
            info.mode = 0o755
        if size:  # a header declaring ``size`` bytes, with no data after it
            info.size = size
            tar.fileobj.write(info.tobuf(tar.format, tar.encoding, tar.errors))
            return
        tar.addfile(info)

    return add


def symlink(name: str, target: str) -> Member:
    return special(name, tarfile.SYMTYPE, target)


def unpack(data: bytes, dest: Path, limits: Limits = LIMITS) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    return unpack_source(io.BytesIO(data), dest, limits)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """``box/ws`` is the workspace; anything else appearing in ``box`` is an escape."""
    (tmp_path / "box").mkdir()
    return tmp_path / "box"


def outside(box: Path) -> list[str]:
    return sorted(p.name for p in box.iterdir() if p.name != "ws")


HOSTILE = {
    "dot-dot": (archive(file("../escaped")), "leads out of the workspace"),
    "dot-dot deep": (archive(file("a/../../escaped")), "leads out of the workspace"),
    "absolute": (archive(file("/tmp/escaped-abs")), "absolute path"),
    "symlink then file through it": (
        archive(symlink("link", ".."), file("link/escaped")),
        "written through the link",
    ),
    "symlink to a dir then file through it": (
        archive(special("d", tarfile.DIRTYPE), symlink("d/up", "../.."), file("d/up/escaped")),
        "written through the link",
    ),
    "symlink absolute": (archive(symlink("abs", "/etc/passwd")), "points outside"),
    "symlink relative out": (archive(symlink("rel", "../../etc/passwd")), "points outside"),
    "symlink chain out": (
        archive(symlink("b", "."), symlink("l", "b/..")),
        "points outside",
    ),
    "symlink replaced by a file": (
        archive(symlink("x", "../escaped"), file("x")),
        "twice",
    ),
    "hardlink out": (archive(special("h", tarfile.LNKTYPE, "/etc/passwd")), "hard link"),
    "hardlink in": (archive(file("a"), special("h", tarfile.LNKTYPE, "a")), "hard link"),
    "char device": (archive(special("dev", tarfile.CHRTYPE)), "device"),
    "block device": (archive(special("blk", tarfile.BLKTYPE)), "device"),
    "fifo": (archive(special("fifo", tarfile.FIFOTYPE)), "device"),
    "huge declared size": (
        archive(special("big", tarfile.REGTYPE, size=50 * 1024**3)),
        "unpacks to more than",
    ),
    "too many files": (
        archive(*(file(f"f{i}") for i in range(LIMITS.max_files + 1))),
        f"more than {LIMITS.max_files} entries",
    ),
    "not gzip": (b"plain text, not an archive", "not a gzipped tar"),
    "gzip of no tar": (gzip.compress(b"\x01" * 4096), "not a gzipped tar"),
    "cut short": (archive(file("a", os.urandom(4096)))[:-600], "unexpected end of data"),
    "no gzip trailer": (archive(file("a", b"y" * 100_000))[:-8], "cut short"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_archive_is_refused_and_nothing_lands_outside(box: Path, name: str) -> None:
    data, reason = HOSTILE[name]
    with pytest.raises(SourceRefused) as refused:
        unpack(data, box / "ws")
    assert reason in refused.value.message, refused.value.message
    assert "\n" not in refused.value.message
    assert outside(box) == []
    assert not Path("/tmp/escaped-abs").exists()


def test_a_huge_pax_header_is_refused_before_it_is_read(box: Path) -> None:
    def huge_pax(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, 2 * 1024**3
        tar.fileobj.write(info.tobuf(tarfile.USTAR_FORMAT))

    with pytest.raises(SourceRefused, match="tar header of"):
        unpack(archive(huge_pax), box / "ws", Limits(10**12, 100))


def test_a_checksum_that_does_not_match_is_refused(box: Path) -> None:
    data = archive(file("a"))
    (box / "ws").mkdir()
    with pytest.raises(SourceRefused, match="SHA-256"):
        unpack_source(io.BytesIO(data), box / "ws", LIMITS, "0" * 64)
    right = hashlib.sha256(data).hexdigest()
    (box / "ws2").mkdir()
    assert unpack_source(io.BytesIO(data), box / "ws2", LIMITS, right) == 1


def test_safe_archives_unpack_with_links_and_modes_and_without_special_bits(box: Path) -> None:
    data = archive(
        special("bin", tarfile.DIRTYPE),
        file("bin/run.sh", b"#!/bin/sh\necho ok\n", mode=0o4755),
        file("docs/readme", b"hello"),
        symlink("docs/run", "../bin/run.sh"),
        symlink("current", "docs"),
        symlink("dangling-inside", "not/yet"),
        file(".conveyor/outputs/build", b"forged=1"),
    )
    assert unpack(data, box / "ws") == 7
    ws = box / "ws"
    assert stat.S_IMODE(os.stat(ws / "bin/run.sh").st_mode) == 0o755  # setuid dropped
    assert os.readlink(ws / "docs/run") == "../bin/run.sh"
    assert (ws / "current/readme").read_bytes() == b"hello"
    assert not (ws / ".conveyor").exists()  # the workspace's own directory is never taken
    assert outside(box) == []


def test_pack_keeps_links_inside_and_modes_and_leaves_out_what_a_copy_leaves_out(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    for name in ("sub", ".git", "node/__pycache__", ".venv/bin", ".conveyor"):
        (src / name).mkdir(parents=True)
    (src / "tool").write_text("#!/bin/sh\n")
    (src / "tool").chmod(0o750)
    (src / ".git/HEAD").write_text("ref")
    (src / "node/__pycache__/x.pyc").write_bytes(b"\0")
    (src / "sub/data.txt").write_text("data")
    (src / "sub/inside").symlink_to("data.txt")
    (src / "out-rel").symlink_to("../outside.txt")
    (src / "out-abs").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    packed = pack_source(src, tmp_path / "s.tar.gz")
    assert sorted(packed.left_out) == ["out-abs", "out-rel"]
    with tarfile.open(tmp_path / "s.tar.gz") as tar:
        names = sorted(tar.getnames())
        assert names == ["node", "sub", "sub/data.txt", "sub/inside", "tool"]
        assert tar.getmember("tool").mode == 0o750
        assert tar.getmember("sub/inside").issym()
    ws = tmp_path / "ws"
    with (tmp_path / "s.tar.gz").open("rb") as stream:
        ws.mkdir()
        unpack_source(stream, ws, LIMITS)
    assert (ws / "sub/inside").read_text() == "data"
    assert stat.S_IMODE(os.stat(ws / "tool").st_mode) == 0o750


# -- the worker's hook and the store --------------------------------------------------


def seeded(settings: Settings, data: bytes, run_id: str = "run-1") -> tuple[WorkspaceSeeder, str]:
    """A seeder over a local store holding ``data`` as the run's source; its SHA-256."""
    store = LocalArtifactStore(settings)
    raw = settings.data_dir / "upload.tar.gz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(data)
    checksum = store.put_source(run_id, raw).checksum
    return WorkspaceSeeder(settings, lambda: store), checksum


def test_a_refused_archive_fails_the_step_in_one_line_and_leaves_no_workspace(
    settings: Settings,
) -> None:
    data = archive(file("ok"), symlink("link", ".."), file("link/escaped"))
    seeder, checksum = seeded(settings, data)
    with pytest.raises(StepFailed) as failed:
        seeder.ensure("run-1", checksum)
    message = failed.value.message
    assert message.startswith("the run's source archive is refused: ") and "\n" not in message
    root = settings.workspace_root
    assert not (root / "run-1").exists()
    assert [p.name for p in root.iterdir()] == []  # nor a half-unpacked staging directory
    assert not (settings.data_dir / "escaped").exists()


def test_an_archive_swapped_in_the_store_is_refused(settings: Settings) -> None:
    seeder, _ = seeded(settings, archive(file("a")))
    with pytest.raises(StepFailed, match="SHA-256"):
        seeder.ensure("run-1", hashlib.sha256(b"what the run recorded").hexdigest())
    assert not (settings.workspace_root / "run-1").exists()


def test_a_source_missing_from_the_store_fails_loudly(settings: Settings) -> None:
    seeder, checksum = seeded(settings, archive(file("a")))
    with pytest.raises(StepFailed, match="not in this worker's artifact store"):
        seeder.ensure("run-2", checksum)


def test_the_source_goes_in_once_per_host_and_never_over_a_workspace(settings: Settings) -> None:
    seeder, checksum = seeded(settings, archive(file("src/main.c", b"int main;")))
    seeder.ensure("run-1", checksum)
    workspace = settings.workspace_root / "run-1"
    assert (workspace / "src/main.c").read_bytes() == b"int main;"
    (workspace / "src/main.c").write_bytes(b"changed by a step")
    seeder.ensure("run-1", checksum)  # a later step on this host: the workspace stands
    assert (workspace / "src/main.c").read_bytes() == b"changed by a step"


def test_the_source_is_out_of_every_keys_reach_and_goes_with_the_artifacts(
    settings: Settings, tmp_path: Path
) -> None:
    store = LocalArtifactStore(settings)
    raw = tmp_path / "a.tar.gz"
    raw.write_bytes(archive(file("a")))
    store.put_source("run-1", raw)
    for key in (".source.tar.gz", ".meta/.source.tar.gz", "x/../.source.tar.gz"):
        with pytest.raises(ArtifactError):
            validate_key(key)
    assert store.list("run-1") == []
    artifact, stream = store.open_source("run-1")
    with stream:
        assert stream.read() == raw.read_bytes()
    assert artifact.checksum == hashlib.sha256(raw.read_bytes()).hexdigest()
    store.delete_run("run-1")
    with pytest.raises(ArtifactError):
        store.open_source("run-1")


# -- the API ----------------------------------------------------------------------------


def post(api: Flask, headers: Headers, source: bytes | None, **extra: object) -> object:
    data: dict[str, object] = {"run": json.dumps({"definition": ONE_STEP})}
    if source is not None:
        data["source"] = (io.BytesIO(source), "source.tar.gz", "application/gzip")
    data.update(extra)
    return api.test_client().post(
        RUNS, data=data, headers=headers, content_type="multipart/form-data"
    )


@pytest.fixture
def small_api(settings: Settings, api: Flask) -> Flask:
    """The API with a 4 KiB limit on source archives."""
    api.extensions["conveyor"].settings.max_source_bytes = 4096
    return api


def test_the_api_stores_a_source_with_the_run_out_of_the_artifacts_list(
    api: Flask, admin: Headers, settings: Settings
) -> None:
    data = archive(file("hello.txt", b"hi"))
    answer = post(api, admin, data)
    assert answer.status_code == 201, answer.data  # type: ignore[attr-defined]
    run_id = json_of(answer)["id"]
    store = LocalArtifactStore(settings)
    _, stream = store.open_source(run_id)
    with stream:
        assert stream.read() == data
    listed = api.test_client().get(f"{RUNS}/{run_id}/artifacts", headers=admin)
    assert json_of(listed)["items"] == []
    # The run records the archive's SHA-256: workers check what they fetch against it.
    plan = api.extensions["conveyor"].store.get_plan(run_id)
    assert plan["workspace_source"] == hashlib.sha256(data).hexdigest()
    # A run without a source records none (and its workers never look for one).
    plain = api.test_client().post(RUNS, json={"definition": ONE_STEP}, headers=admin)
    assert (
        api.extensions["conveyor"].store.get_plan(json_of(plain)["id"])["workspace_source"] is None
    )


def test_past_the_size_limit_is_a_413_and_no_run(small_api: Flask, admin: Headers) -> None:
    big = archive(file("noise", os.urandom(8192)))
    answer = post(small_api, admin, big)
    assert answer.status_code == 413, answer.data  # type: ignore[attr-defined]
    assert "CONVEYOR_MAX_SOURCE_BYTES" in json_of(answer)["detail"]
    runs = small_api.test_client().get(RUNS, headers=admin)
    assert json_of(runs)["items"] == []


@pytest.mark.parametrize(
    ("source", "extra", "expected"),
    [
        (b"not gzip at all", {}, "gzipped tar"),
        (None, {"other": "x"}, "unknown part"),
    ],
)
def test_bad_multipart_bodies_are_400s(
    api: Flask, admin: Headers, source: bytes | None, extra: dict[str, str], expected: str
) -> None:
    answer = post(api, admin, source, **extra)
    assert answer.status_code == 400, answer.data  # type: ignore[attr-defined]
    assert expected in json_of(answer)["detail"]


def test_a_multipart_body_without_its_run_part_is_a_400(api: Flask, admin: Headers) -> None:
    answer = api.test_client().post(
        RUNS,
        data={"source": (io.BytesIO(archive(file("a"))), "s.tar.gz")},
        headers=admin,
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400
    assert "'run' part" in json_of(answer)["detail"]
