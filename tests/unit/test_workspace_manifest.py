"""Workspace manifests: what they hold, what they refuse, and the changes of a step."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.orchestrator.errors import StepFailed, WorkspaceRefused
from conveyor.orchestrator.workspaces import Changes, Entry, Manifest, apply, diff

DIGEST = "ab" * 32


def raw(rows: list[Any], version: int = 1) -> bytes:
    return zlib.compress(json.dumps({"v": version, "e": rows}).encode())


def test_a_manifest_reads_back_as_written_and_its_digest_names_its_bytes() -> None:
    """Given files, a directory and a link, Then the bytes read back to the same manifest."""
    manifest = Manifest(
        {
            "src": Entry.dir(0o755),
            "src/run.sh": Entry.file(DIGEST, 12, 0o755),
            "README": Entry.file("cd" * 32, 3, 0o644),
            "latest": Entry.link("src/run.sh"),
            "empty": Entry.dir(0o700),
        }
    )

    again = Manifest.from_bytes(manifest.to_bytes())

    assert again == manifest
    assert again["src/run.sh"].mode == 0o755
    assert again.digest == manifest.digest
    assert Manifest(dict(reversed(list(manifest.items())))).digest == manifest.digest


def test_where_packed_contents_are_kept_reads_back_and_does_not_make_another_workspace() -> None:
    """Given files whose contents are in packs, Then their places read back; a manifest
    of the same paths stored elsewhere is equal (the same workspace), its digest not."""
    entries = {
        "a": Entry.file(DIGEST, 3),
        "b": Entry.file(DIGEST, 3),  # the same content at two paths: one place
        "c": Entry.file("cd" * 32, 5, 0o755),
        "loose": Entry.file("ef" * 32, 9),
    }
    packed = {DIGEST: ("11" * 32, 0), "cd" * 32: ("22" * 32, 4096)}
    manifest = Manifest(entries, {**packed, "99" * 32: ("33" * 32, 0)})  # the last: unused

    again = Manifest.from_bytes(manifest.to_bytes())

    assert again.packed == packed
    assert again == Manifest(entries)
    assert again.digest == manifest.digest != Manifest(entries).digest


def test_a_manifest_of_version_1_is_still_read() -> None:
    """Given the first format (no packs), Then it reads, every content a blob of its own."""
    manifest = Manifest.from_bytes(raw([["x", "f", 420, DIGEST, 1]], version=1))

    assert manifest["x"] == Entry.file(DIGEST, 1) and manifest.packed == {}


def packed_raw(rows: list[Any], packs: Any) -> bytes:
    return zlib.compress(json.dumps({"v": 2, "e": rows, "p": packs}).encode())


@pytest.mark.parametrize(
    ("rows", "packs", "reason"),
    [
        ([["x", "f", 420, DIGEST, 1, 1, 0]], ["11" * 32], "names a pack the manifest lacks"),
        ([["x", "f", 420, DIGEST, 1, -1, 0]], ["11" * 32], "names a pack the manifest lacks"),
        ([["x", "f", 420, DIGEST, 1, 0, -5]], ["11" * 32], "malformed place in its pack"),
        ([["x", "f", 420, DIGEST, 1, 0, "0"]], ["11" * 32], "malformed place in its pack"),
        ([["x", "f", 420, DIGEST, 1, 0]], ["11" * 32], "malformed entry"),
        ([["x", "f", 420, DIGEST, 1]], ["not a digest"], "malformed list of packs"),
        ([["x", "f", 420, DIGEST, 1]], {"11": 0}, "malformed list of packs"),
        (
            [["x", "f", 420, DIGEST, 1, 0, 0], ["y", "f", 420, DIGEST, 1, 0, 64]],
            ["11" * 32],
            "content of 'y' in two places",
        ),
    ],
)
def test_a_manifest_that_places_contents_badly_is_refused(
    rows: list[Any], packs: Any, reason: str
) -> None:
    """Given a pack list or a place in a pack that is malformed, Then one line says so."""
    with pytest.raises(WorkspaceRefused, match=reason) as refused:
        Manifest.from_bytes(packed_raw(rows, packs))

    assert "\n" not in refused.value.message


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([["../x", "f", 420, DIGEST, 1]], "leads out of the workspace"),
        ([["/etc/passwd", "f", 420, DIGEST, 1]], "is absolute"),
        ([["a//b", "f", 420, DIGEST, 1]], "empty or '.' part"),
        ([["a/./b", "f", 420, DIGEST, 1]], "empty or '.' part"),
        ([["a\x00b", "f", 420, DIGEST, 1]], "NUL"),
        ([[".conveyor/outputs.json", "f", 420, DIGEST, 1]], "own directory"),
        ([["x", "f", 420, "XYZ", 1]], "malformed digest"),
        ([["x", "f", 420, DIGEST, -1]], "malformed size"),
        ([["x", "f", 0o17777, DIGEST, 1]], "malformed mode"),
        ([["x", "q", 420]], "malformed entry"),
        ([["x", "f", 420, DIGEST, 1], ["x", "f", 420, DIGEST, 1]], "twice"),
        ([["up", "l", "../../etc"]], "points outside the workspace"),
        ([["abs", "l", "/etc/passwd"]], "points outside the workspace"),
        ([["abs", "l", "/workspace/../etc"]], "points outside the workspace"),
        ([["link", "l", "src"], ["link/x", "f", 420, DIGEST, 1]], "which is a link"),
        ([["file", "f", 420, DIGEST, 1], ["file/x", "d", 493]], "which is a file"),
    ],
)
def test_a_manifest_that_could_leave_the_workspace_is_refused_in_one_line(
    rows: list[Any], reason: str
) -> None:
    """Given a manifest with a bad path, link, digest or mode, Then one line names it."""
    with pytest.raises(WorkspaceRefused, match=reason) as refused:
        Manifest.from_bytes(raw(rows))

    assert "\n" not in refused.value.message
    assert isinstance(refused.value, StepFailed)  # the executor fails the step with it


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not zlib", "not zlib data"),
        (zlib.compress(b"{"), "not JSON"),
        (raw([], version=2), "not version 1 or 2"),  # version 2 lists its packs
        (raw([], version=3), "not version 1 or 2"),
        (zlib.compress(b"[]"), "not version 1"),
        (zlib.compress(json.dumps({"v": 1, "e": {}}).encode()), "no list of entries"),
        (zlib.compress(b'{"v": 1, "e": []}')[:-3], "cut short"),
    ],
)
def test_a_manifest_that_is_not_one_is_refused(data: bytes, reason: str) -> None:
    """Given bytes that are no manifest, Then WorkspaceRefused says why."""
    with pytest.raises(WorkspaceRefused, match=reason):
        Manifest.from_bytes(data)


def test_links_inside_the_workspace_and_under_the_containers_view_are_kept() -> None:
    """Given links to siblings, parents inside, and /workspace/..., Then they read back."""
    manifest = Manifest.from_bytes(
        raw(
            [
                ["a", "d", 493],
                ["a/up", "l", "../b"],
                ["a/self", "l", "."],
                ["abs", "l", "/workspace/a"],
                ["dangling", "l", "not-yet"],
            ]
        )
    )

    assert manifest["a/up"].target == "../b"
    assert manifest["abs"].target == "/workspace/a"


def test_applying_a_steps_changes_keeps_what_other_steps_published_meanwhile() -> None:
    """Given a head that moved since the step started, Then its changes apply on top."""
    start = Manifest({"src": Entry.dir(), "src/a": Entry.file(DIGEST, 1)})
    after = Manifest({"src": Entry.dir(), "src/b": Entry.file(DIGEST, 1), "out": Entry.dir()})
    moved = Manifest({**start, "other": Entry.file("cd" * 32, 2), "src/c": Entry.file(DIGEST, 1)})

    new = apply(moved, diff(start, after))

    assert set(new) == {"src", "src/b", "src/c", "out", "other"}


def test_removing_a_directory_removes_what_is_below_it_in_the_head() -> None:
    """Given a step that removed a directory, Then what another step put in it goes too."""
    head = Manifest({"d": Entry.dir(), "d/mine": Entry.file(DIGEST, 1), "d/theirs": Entry.dir()})

    new = apply(head, Changes(removed=frozenset({"d", "d/mine"})))

    assert dict(new) == {}


def test_a_path_set_below_a_missing_directory_brings_its_parents() -> None:
    """Given a change under a directory the head lacks, Then the head gains the directory."""
    new = apply(Manifest(), Changes({"a/b/c": Entry.file(DIGEST, 1)}))

    assert new["a"].kind == "dir" and new["a/b"].kind == "dir"
    assert Manifest.from_bytes(new.to_bytes()) == new


_names = st.sampled_from(["a", "b", "c"])
_paths = st.lists(_names, min_size=1, max_size=3).map("/".join)
_entries = st.one_of(
    st.builds(Entry.file, st.sampled_from([DIGEST, "cd" * 32]), st.integers(0, 9)),
    st.builds(Entry.link, st.sampled_from(["a", "b/c"])),
    st.builds(Entry.dir, st.sampled_from([0o755, 0o700])),
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    """Valid manifests: every parent present as a directory."""
    found: dict[str, Entry] = {}
    for path, entry in draw(st.dictionaries(_paths, _entries, max_size=8)).items():
        parts = path.split("/")
        if any(
            found.get("/".join(parts[:i]), Entry.dir()).kind != "dir" for i in range(1, len(parts))
        ):
            continue
        if any(p.startswith(path + "/") for p in found) and entry.kind != "dir":
            continue
        for i in range(1, len(parts)):
            found.setdefault("/".join(parts[:i]), Entry.dir())
        found[path] = entry
    return Manifest(found)


@settings(max_examples=300, deadline=None)
@given(manifests(), manifests())
def test_applying_the_diff_of_two_manifests_gives_the_second(a: Manifest, b: Manifest) -> None:
    """For any two workspaces, the changes from one to the other, applied, give the other."""
    assert apply(a, diff(a, b)) == b
    assert not diff(b, b)


def test_applying_changes_keeps_where_the_head_and_the_changes_keep_contents() -> None:
    """Given a head with packed contents and changes that packed others, Then the new
    head places both (the head's place kept where both name one)."""
    head = Manifest({"a": Entry.file(DIGEST, 1)}, {DIGEST: ("11" * 32, 0)})
    changes = Changes(
        {"b": Entry.file("cd" * 32, 2), "c": Entry.file(DIGEST, 1)},
        packed={"cd" * 32: ("22" * 32, 0), DIGEST: ("22" * 32, 2)},
    )

    new = Manifest.from_bytes(apply(head, changes).to_bytes())

    assert new.packed == {DIGEST: ("11" * 32, 0), "cd" * 32: ("22" * 32, 0)}
