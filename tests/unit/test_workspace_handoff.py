"""A run's workspace handed between two hosts that share no directory, only the store."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from conveyor.orchestrator.contracts import WorkspaceBlobs
from conveyor.orchestrator.errors import WorkspaceRefused
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing.workspaces import MemoryWorkspaceRecords
from conveyor.orchestrator.workspaces import Baseline, Manifest, WorkspaceHandoff
from conveyor.providers.local import LocalArtifactStore

RUN = "3f0c2a1e-run"


class Counting:
    """The local artifact store, counting blobs and packs stored and read (the real store
    beneath)."""

    def __init__(self, inner: LocalArtifactStore) -> None:
        self.inner = inner
        self.put: list[str] = []
        self.opened: list[str] = []
        self.packs: list[str] = []
        self.reads: list[tuple[str, int, int]] = []

    def missing_blobs(self, run_id: str, digests: Any) -> set[str]:
        return self.inner.missing_blobs(run_id, digests)

    def put_blob(self, run_id: str, digest: str, src: Path) -> None:
        self.put.append(digest)
        self.inner.put_blob(run_id, digest, src)

    def open_blob(self, run_id: str, digest: str) -> BinaryIO:
        self.opened.append(digest)
        return self.inner.open_blob(run_id, digest)

    def put_pack(self, run_id: str, data: bytes) -> str:
        digest = self.inner.put_pack(run_id, data)
        self.packs.append(digest)
        return digest

    def read_pack(self, run_id: str, digest: str, start: int, length: int) -> bytes:
        self.reads.append((digest, start, length))
        return self.inner.read_pack(run_id, digest, start, length)

    def put_manifest(self, run_id: str, digest: str, data: bytes) -> None:
        self.inner.put_manifest(run_id, digest, data)

    def get_manifest(self, run_id: str, digest: str) -> bytes:
        return self.inner.get_manifest(run_id, digest)


class Host:
    """One worker host: a data directory of its own, the shared store and heads."""

    def __init__(self, base: Path, name: str, store: Counting, heads: MemoryWorkspaceRecords):
        self.data = base / name
        self.store = store
        self.handoff = WorkspaceHandoff(
            self.data / "workspaces", self.data / "workspace-state", lambda: store, heads, name
        )
        self.ws = self.data / "workspaces" / RUN

    def step(self, work: Callable[[Path], None]) -> Any:
        """Run one step here: prepare, do ``work`` in the workspace, publish."""
        baseline = self.handoff.prepare(RUN)
        self.ws.mkdir(parents=True, exist_ok=True)
        work(self.ws)
        return baseline, self.handoff.publish(RUN, baseline)


@pytest.fixture
def store(settings: Settings, tmp_path: Path) -> Counting:
    return Counting(LocalArtifactStore(settings, root=tmp_path / "store"))


@pytest.fixture
def heads() -> MemoryWorkspaceRecords:
    return MemoryWorkspaceRecords()


@pytest.fixture
def a(tmp_path: Path, store: Counting, heads: MemoryWorkspaceRecords) -> Host:
    return Host(tmp_path, "host-a", store, heads)


@pytest.fixture
def b(tmp_path: Path, store: Counting, heads: MemoryWorkspaceRecords) -> Host:
    return Host(tmp_path, "host-b", store, heads)


def tree(root: Path) -> dict[str, Any]:
    """What a workspace holds, as a step sees it: kinds, modes, contents, link targets."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".conveyor" or rel.startswith(".conveyor/"):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir",)
        else:
            found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


def checkout(ws: Path) -> None:
    (ws / "src" / "pkg").mkdir(parents=True)
    (ws / "src" / "pkg" / "mod.py").write_text("print('hi')\n")
    (ws / "build.sh").write_text("#!/bin/sh\necho built\n")
    (ws / "build.sh").chmod(0o755)
    (ws / "empty" / "nested").mkdir(parents=True)
    (ws / "current").symlink_to("src/pkg")
    (ws / "dangling").symlink_to("not-built-yet")
    (ws / ".conveyor").mkdir()
    (ws / ".conveyor" / "outputs.json").write_text("{}")


def test_a_step_on_another_host_sees_exactly_what_the_step_before_left(a: Host, b: Host) -> None:
    """Given checkout on host A, When build runs on host B, Then B holds the same tree."""
    a.step(checkout)

    baseline, _ = b.step(lambda ws: None)

    assert tree(b.ws) == tree(a.ws)
    assert tree(b.ws)["build.sh"][1] == 0o755
    assert tree(b.ws)["current"] == ("link", "src/pkg")
    assert (b.ws / "empty" / "nested").is_dir()
    assert not (b.ws / ".conveyor").exists()  # the workspace's own directory stays home
    assert baseline.fetched.files_fetched == 2


def test_deletions_renames_and_mode_changes_travel_back(a: Host, b: Host) -> None:
    """Given B removes, renames and chmods, When A runs next, Then A sees the same."""
    a.step(checkout)

    def change(ws: Path) -> None:
        (ws / "src" / "pkg" / "mod.py").rename(ws / "src" / "main.py")
        (ws / "empty" / "nested").rmdir()
        (ws / "dangling").unlink()
        (ws / "build.sh").chmod(0o644)

    b.step(change)
    a.store.opened.clear()
    baseline, _ = a.step(lambda ws: None)

    assert tree(a.ws) == tree(b.ws)
    assert "src/pkg/mod.py" not in tree(a.ws) and "dangling" not in tree(a.ws)
    assert tree(a.ws)["build.sh"][1] == 0o644
    # The renamed file's content was on A already: copied there, not downloaded.
    assert a.store.opened == []
    assert baseline.fetched.files_reused == 1


def test_a_step_that_changed_one_file_hands_over_that_file_only(a: Host, b: Host) -> None:
    """Given a workspace of many files, When a step edits one, Then one blob travels."""

    def many(ws: Path) -> None:
        for n in range(200):
            (ws / f"f{n:03}.txt").write_text(f"file {n}\n")

    a.step(many)
    b.step(lambda ws: None)
    a.store.put.clear()

    _, published = b.step(lambda ws: (ws / "f007.txt").write_text("changed\n"))
    a.store.opened.clear()
    baseline, again = a.step(lambda ws: None)

    assert a.store.put == [hashlib.sha256(b"changed\n").hexdigest()]
    assert (published.files_uploaded, published.changed) == (1, 1)
    assert a.store.opened == [hashlib.sha256(b"changed\n").hexdigest()]
    assert (a.ws / "f007.txt").read_text() == "changed\n"
    assert baseline.fetched.files_fetched == 1
    assert again.head is None  # nothing changed on A: nothing written


def test_a_second_publish_with_no_change_reads_no_file_again(a: Host, b: Host) -> None:
    """Given files hashed once, or written by materialising, Then no file is hashed again."""
    a.step(checkout)
    a.step(lambda ws: os.utime(ws / "build.sh", (1, 1)))  # an older mtime: a real change

    _, first = b.step(lambda ws: None)
    _, second = b.step(lambda ws: None)

    assert first.files_hashed == 0  # B wrote them and knows their digests
    assert second.files_hashed == 0


def test_a_host_that_holds_the_content_copies_it_rather_than_downloading(a: Host, b: Host) -> None:
    """Given B has a file's content at another path, When it is copied on A, Then B copies."""
    a.step(lambda ws: (ws / "data.bin").write_bytes(os.urandom(4096)))
    b.step(lambda ws: None)
    a.step(lambda ws: (ws / "copy.bin").write_bytes((ws / "data.bin").read_bytes()))
    b.store.opened.clear()

    baseline, _ = b.step(lambda ws: None)

    assert b.store.opened == []
    assert (b.ws / "copy.bin").read_bytes() == (b.ws / "data.bin").read_bytes()
    assert baseline.fetched.files_fetched == 0


def test_a_large_file_streams_through_in_bounded_memory(a: Host, b: Host) -> None:
    """Given a 50 MB file, Then it is handed over whole, and memory stays small."""
    size = 50 * 1024 * 1024

    def big(ws: Path) -> None:
        with open(ws / "big.bin", "wb") as out:
            for n in range(50):
                out.write(bytes([n]) * (1024 * 1024))

    a.step(big)
    tracemalloc.start()
    try:
        b.step(lambda ws: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (b.ws / "big.bin").stat().st_size == size
    assert _sha(b.ws / "big.bin") == _sha(a.ws / "big.bin")
    assert peak < 16 * 1024 * 1024


def test_concurrent_publishers_on_many_hosts_lose_no_change(
    tmp_path: Path, store: Counting, heads: MemoryWorkspaceRecords
) -> None:
    """Given 8 hosts each publishing its own file at once, Then the head holds all 8."""
    hosts = [Host(tmp_path, f"host-{n}", store, heads) for n in range(8)]
    hosts[0].step(lambda ws: (ws / "seed").write_text("seed"))
    baselines = [h.handoff.prepare(RUN) for h in hosts]
    start = threading.Barrier(len(hosts))
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        try:
            hosts[n].ws.mkdir(parents=True, exist_ok=True)
            (hosts[n].ws / f"from-{n}").write_text(str(n))
            start.wait()
            hosts[n].handoff.publish(RUN, baselines[n])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(len(hosts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    late = Host(tmp_path, "host-late", store, heads)
    late.step(lambda ws: None)
    names = sorted(p.name for p in late.ws.iterdir())
    assert names == sorted(["seed"] + [f"from-{n}" for n in range(8)])


def test_the_first_step_carries_what_was_in_the_directory_before_it(a: Host, b: Host) -> None:
    """Given a seeded source on A before any publish, Then B sees the source too."""
    a.ws.mkdir(parents=True)
    (a.ws / "seeded.txt").write_text("from the source archive")

    a.step(lambda ws: (ws / "built").write_text("x"))
    b.step(lambda ws: None)

    assert (b.ws / "seeded.txt").read_text() == "from the source archive"


def test_a_failed_step_publishes_nothing(a: Host, b: Host) -> None:
    """Given a step that never publishes (it failed), Then the next host does not see it."""
    a.step(checkout)
    a.handoff.prepare(RUN)
    (a.ws / "half-written").write_text("junk")  # the step failed: no publish

    b.step(lambda ws: None)

    assert not (b.ws / "half-written").exists()


# -- bad input: nothing written outside the workspace -----------------------------------------


def _forge(host: Host, heads: MemoryWorkspaceRecords, rows: list[Any]) -> None:
    """Make the run's head a manifest written by hand (as someone with store access could)."""
    import json

    data = zlib.compress(json.dumps({"v": 1, "e": rows}).encode())
    digest = hashlib.sha256(data).hexdigest()
    host.store.inner.put_manifest(RUN, digest, data)
    current = heads.workspace_head(RUN)
    assert heads.move_workspace_head(RUN, current.digest if current else None, digest, "evil")


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([["../x", "f", 420, "ab" * 32, 1]], "leads out of the workspace"),
        ([["/tmp/x", "f", 420, "ab" * 32, 1]], "is absolute"),
        ([["escape", "l", "../../etc"]], "points outside the workspace"),
        ([["out", "l", "../.."], ["out/x", "f", 420, "ab" * 32, 1]], "points outside"),
        ([["d", "d", 493], ["d/in", "l", ".."], ["up", "l", "d/in/../.."]], "points outside"),
        ([["in", "l", "."], ["in/x", "f", 420, "ab" * 32, 1]], "which is a link"),
    ],
)
def test_a_forged_manifest_is_refused_and_nothing_is_written_outside(
    tmp_path: Path, a: Host, b: Host, heads: MemoryWorkspaceRecords, rows: list[Any], reason: str
) -> None:
    """Given a head whose manifest leads out, Then the step fails in one line, outside intact."""
    a.step(checkout)
    _forge(a, heads, rows)
    before = _listing(tmp_path)

    with pytest.raises(WorkspaceRefused, match=reason) as refused:
        b.handoff.prepare(RUN)

    assert "\n" not in refused.value.message
    # Only B's own data directory may have changed (its workspace was made).
    after = [p for p in _listing(tmp_path) if p.split("/")[0] != "host-b"]
    assert after == [p for p in before if p.split("/")[0] != "host-b"]
    assert not any(".fetch-" in p or ".link-" in p for p in _listing(tmp_path))


def test_a_file_below_a_link_a_step_made_is_never_written_through_it(
    tmp_path: Path, a: Host, b: Host
) -> None:
    """Given B's directory has a link out where A published a directory, Then B refuses."""
    outside = tmp_path / "outside"
    outside.mkdir()
    b.step(lambda ws: None)
    a.step(lambda ws: (ws / "dir").mkdir() or (ws / "dir" / "x").write_text("x"))
    (b.ws / "dir").symlink_to(outside)  # made by a step running on B right now

    with pytest.raises(WorkspaceRefused, match="through the link 'dir'"):
        b.handoff.prepare(RUN)

    assert list(outside.iterdir()) == []


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path, a: Host, b: Host) -> None:
    """Given a blob altered in the store, Then B refuses it and writes no file of it."""
    a.step(lambda ws: (ws / "f").write_text("genuine"))
    digest = hashlib.sha256(b"genuine").hexdigest()
    (tmp_path / "store" / RUN / ".blobs" / digest).write_text("tampered")

    with pytest.raises(WorkspaceRefused, match=f"blob {digest} of 'f' does not match its digest"):
        b.handoff.prepare(RUN)

    assert not (b.ws / "f").exists()
    assert [p.name for p in (b.data / "workspaces").iterdir()] == [RUN]


def test_a_missing_blob_is_refused(tmp_path: Path, a: Host, b: Host) -> None:
    """Given a blob gone from the store, Then B's step fails saying so."""
    a.step(lambda ws: (ws / "f").write_text("genuine"))
    digest = hashlib.sha256(b"genuine").hexdigest()
    (tmp_path / "store" / RUN / ".blobs" / digest).unlink()

    with pytest.raises(WorkspaceRefused, match="is missing from the artifact store"):
        b.handoff.prepare(RUN)


def test_a_link_out_of_the_workspace_fails_the_publish(a: Host) -> None:
    """Given a step that made a link to /etc, Then its publish fails in one line."""
    baseline = a.handoff.prepare(RUN)
    a.ws.mkdir(parents=True)
    (a.ws / "etc").symlink_to("../../../../../../etc")

    with pytest.raises(WorkspaceRefused, match="'etc' points outside the workspace"):
        a.handoff.publish(RUN, baseline)


def test_a_pipe_is_left_out_and_named(a: Host, b: Host) -> None:
    """Given a named pipe in the workspace, Then it is skipped and the rest travels."""
    a.ws.mkdir(parents=True)
    os.mkfifo(a.ws / "pipe")
    baseline = Baseline(Manifest(), None)
    (a.ws / "f").write_text("x")

    published = a.handoff.publish(RUN, baseline)
    b.step(lambda ws: None)

    assert published.skipped == ["pipe"]
    assert sorted(p.name for p in b.ws.iterdir()) == ["f"]


def test_blobs_and_manifests_go_with_the_run(a: Host, b: Host, tmp_path: Path) -> None:
    """Given a run's workspace in the store, When the run is deleted, Then all of it goes."""
    a.step(checkout)
    inner = a.store.inner
    blobs = list((tmp_path / "store" / RUN / ".blobs").iterdir())
    manifests = list((tmp_path / "store" / RUN / ".manifests").iterdir())

    assert (len(blobs), len(manifests)) == (2, 1)
    assert inner.list(RUN) == []  # never listed as artifacts
    assert inner.delete_run(RUN) == 0
    assert not (tmp_path / "store" / RUN).exists()


def test_the_local_store_answers_to_the_workspace_blobs_protocol(store: Counting) -> None:
    assert isinstance(store.inner, WorkspaceBlobs)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


# -- many small files travel in packs -------------------------------------------------------


def many_files(ws: Path, count: int = 40, prefix: str = "f") -> None:
    """``count`` small files of distinct contents in two directories."""
    for n in range(count):
        folder = ws / ("src" if n % 2 else "docs")
        folder.mkdir(exist_ok=True)
        (folder / f"{prefix}{n:03}.txt").write_text(f"{prefix} content {n}\n" * (n + 1))


def _packs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "store" / RUN / ".packs"
    return (
        sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []
    )


def test_many_small_files_travel_in_one_pack_read_in_one_go(
    tmp_path: Path, a: Host, b: Host
) -> None:
    """Given a step that wrote 40 small files and a large one, When B runs next, Then
    the small ones were stored as one pack and fetched with one read; the large one is
    a blob of its own."""
    big = os.urandom(2 * 1024 * 1024)

    def work(ws: Path) -> None:
        many_files(ws)
        (ws / "big.bin").write_bytes(big)

    _, published = a.step(work)
    baseline, _ = b.step(lambda ws: None)

    assert tree(b.ws) == tree(a.ws)
    assert a.store.put == [hashlib.sha256(big).hexdigest()]  # the large file alone
    assert len(a.store.packs) == 1 and _packs(tmp_path) == [_packs(tmp_path)[0]]
    assert published.files_uploaded == 41
    assert [pack for pack, _, _ in b.store.reads] == a.store.packs  # one read
    assert baseline.fetched.files_fetched == 41


def test_a_content_the_head_holds_in_a_pack_is_not_stored_again(a: Host, b: Host) -> None:
    """Given packed files, When a step on B copies one to a new path, Then nothing is
    uploaded, and A gets the copy from the file it holds."""
    a.step(many_files)
    b.step(lambda ws: None)
    packs = list(a.store.packs)

    _, published = b.step(
        lambda ws: (ws / "copy.txt").write_bytes((ws / "src/f001.txt").read_bytes())
    )
    a.store.reads.clear()
    baseline, _ = a.step(lambda ws: None)

    assert (published.files_uploaded, published.files_stored_already) == (0, 1)
    assert a.store.packs == packs and a.store.put == []
    assert (a.ws / "copy.txt").read_text() == (a.ws / "src/f001.txt").read_text()
    assert a.store.reads == [] and baseline.fetched.files_reused == 1


def test_a_host_reads_only_the_part_of_a_pack_it_needs(tmp_path: Path, a: Host, b: Host) -> None:
    """Given a pack of which a later step removed half the files, When B fetches the
    workspace, Then it reads only the bytes of the half that is left."""
    a.step(many_files)
    a.step(lambda ws: shutil.rmtree(ws / "src"))

    b.step(lambda ws: None)

    ((pack, start, length),) = b.store.reads
    docs = sum(p.stat().st_size for p in (a.ws / "docs").iterdir())
    assert (start, length) == (0, docs)  # packed in path order: docs/ first
    assert (tmp_path / "store" / RUN / ".packs" / pack).stat().st_size > 2 * docs
    assert tree(b.ws) == tree(a.ws)


@pytest.mark.parametrize(
    ("harm", "reason"),
    [
        (lambda pack: pack.write_bytes(b"X" + pack.read_bytes()[1:]), "does not match its digest"),
        (lambda pack: pack.unlink(), "is missing from the artifact store"),
        (lambda pack: pack.write_bytes(pack.read_bytes()[:100]), "ends before it"),
    ],
    ids=["tampered", "missing", "cut-short"],
)
def test_a_harmed_pack_is_refused_and_nothing_of_it_is_written(
    tmp_path: Path, a: Host, b: Host, harm: Callable[[Path], Any], reason: str
) -> None:
    """Given the pack altered, removed or cut short in the store, Then B's step fails in
    one line, no file of the pack is placed, and nothing is left beside the workspace."""
    a.step(many_files)
    (pack,) = _packs(tmp_path)
    harm(pack)

    with pytest.raises(WorkspaceRefused, match=reason) as refused:
        b.handoff.prepare(RUN)

    assert "\n" not in refused.value.message
    assert [p for p in b.ws.rglob("*") if p.is_file()] == []  # the pack is read whole first
    assert [p.name for p in (b.data / "workspaces").iterdir()] == [RUN]


def test_a_manifest_whose_pack_index_lies_is_refused(
    tmp_path: Path, a: Host, b: Host, heads: MemoryWorkspaceRecords
) -> None:
    """Given a head whose manifest places a file's content where another's lies, or past
    the pack's end, Then B refuses it: every content is checked against its digest."""
    a.step(many_files)
    (pack,) = _packs(tmp_path)
    genuine = hashlib.sha256(b"f content 0\n").hexdigest()

    _forge_v2(a, heads, [["x", "f", 420, genuine, 12, 0, 5]], [pack.name])
    with pytest.raises(WorkspaceRefused, match=f"blob {genuine} of 'x' does not match"):
        b.handoff.prepare(RUN)

    _forge_v2(a, heads, [["x", "f", 420, genuine, 12, 0, 10**9]], [pack.name])
    with pytest.raises(WorkspaceRefused, match="ends before it"):
        b.handoff.prepare(RUN)

    _forge_v2(a, heads, [["x", "f", 420, genuine, 10**15, 0, 0]], [pack.name])  # a petabyte
    with pytest.raises(WorkspaceRefused, match="ends before it"):
        b.handoff.prepare(RUN)
    assert not (b.ws / "x").exists()


def _forge_v2(host: Host, heads: MemoryWorkspaceRecords, rows: list[Any], packs: list[str]) -> None:
    import json

    data = zlib.compress(json.dumps({"v": 2, "e": rows, "p": packs}).encode())
    digest = hashlib.sha256(data).hexdigest()
    host.store.inner.put_manifest(RUN, digest, data)
    current = heads.workspace_head(RUN)
    assert heads.move_workspace_head(RUN, current.digest if current else None, digest, "evil")


def test_a_file_changed_while_it_is_packed_fails_the_publish(a: Host) -> None:
    """Given a file whose content changes between the snapshot and its packing, Then the
    publish fails rather than store bytes that do not match the digest."""
    import conveyor.orchestrator.workspaces.local as local

    baseline = a.handoff.prepare(RUN)
    a.ws.mkdir(parents=True)
    many_files(a.ws)
    real = local.snapshot

    def snapshot_then_edit(root: Path, *args: Any) -> Any:
        found = real(root, *args)
        (root / "src" / "f001.txt").write_text("f content 1\nf content 9\n")  # same size
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("conveyor.orchestrator.workspaces.handoff.snapshot", snapshot_then_edit)
        with pytest.raises(WorkspaceRefused, match=r"'src/f001\.txt' changed while it was"):
            a.handoff.publish(RUN, baseline)

    assert a.store.packs == []


def test_workspace_packs_go_with_the_run(tmp_path: Path, a: Host) -> None:
    """Given packs in the store, When the run's workspace is removed, Then they go too."""
    a.step(many_files)
    inner = a.store.inner

    assert len(_packs(tmp_path)) == 1
    assert inner.delete_workspace(RUN) == 2  # the pack and the manifest
    assert not (tmp_path / "store" / RUN / ".packs").exists()


def test_a_read_past_the_end_of_a_pack_gives_what_is_there(a: Host) -> None:
    """The local store's pack reads: a range past the end is cut short, not padded."""
    inner = a.store.inner
    digest = inner.put_pack(RUN, b"0123456789")

    assert digest == hashlib.sha256(b"0123456789").hexdigest()
    assert inner.read_pack(RUN, digest, 2, 3) == b"234"
    assert inner.read_pack(RUN, digest, 8, 10) == b"89"
    assert inner.read_pack(RUN, digest, 20, 5) == b""
