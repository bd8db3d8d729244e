"""What a workspace holds, as data: ``Entry``, ``Manifest``, and the ``Changes`` of a step.

A manifest names every path of a workspace (POSIX, relative to its root) with its kind,
permission bits, and either the SHA-256 and size of a file's content or the target of a
link. Its bytes are compact versioned JSON compressed with zlib, and its digest is the
SHA-256 of those bytes, so equal workspaces have equal digests.

``Manifest.from_bytes`` trusts nothing it reads (it may come from a store someone else
can write to): any path that is absolute, holds ``..``, ``.``, an empty part or a NUL,
lies under the workspace's own ``.conveyor/`` directory, or sits below a file or a link;
any link whose target leads out of the workspace; any malformed digest, size or mode:
each is refused as ``WorkspaceRefused`` with one line naming it.

Link targets are relative and stay inside the workspace when resolved from the link's
own directory, or absolute under ``/workspace`` (where a container sees the workspace:
a step in a Docker sandbox makes those). A source archive refuses absolute links
altogether, since ``/workspace`` means nothing on the machine it was packed on.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.orchestrator.errors import WorkspaceRefused

#: The workspace's own directory (step outputs files): never part of a manifest.
RESERVED = ".conveyor"
#: Where a container sees the workspace: the one place an absolute link may point.
CONTAINER_ROOT = "/workspace"
VERSION = 1
#: A manifest inflates to at most this many bytes (about a million paths).
MAX_BYTES = 256 * 1024 * 1024
MAX_PATH = 4096

Kind = Literal["file", "dir", "link"]
_KINDS: dict[str, Kind] = {"f": "file", "d": "dir", "l": "link"}
_LETTERS = {kind: letter for letter, kind in _KINDS.items()}
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One path of a workspace: a file (mode, digest, size), a directory (mode), a link."""

    kind: Kind
    mode: int = 0o644
    digest: str = ""
    size: int = 0
    target: str = ""

    @classmethod
    def file(cls, digest: str, size: int, mode: int = 0o644) -> Entry:
        """A regular file of ``size`` bytes whose SHA-256 is ``digest``."""
        return cls("file", mode & 0o7777, digest, size)

    @classmethod
    def dir(cls, mode: int = 0o755) -> Entry:
        """A directory."""
        return cls("dir", mode & 0o7777)

    @classmethod
    def link(cls, target: str) -> Entry:
        """A symbolic link to ``target`` (never followed)."""
        return cls("link", 0o777, target=target)


def is_digest(value: object) -> bool:
    """Whether ``value`` is a SHA-256 in lowercase hex."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_path(path: str) -> str:
    """``path`` if it names a place inside a workspace; WorkspaceRefused otherwise."""
    if not isinstance(path, str) or not path:
        raise WorkspaceRefused(f"the workspace manifest names an empty or non-text path ({path!r})")
    if "\x00" in path or len(path) > MAX_PATH:
        raise WorkspaceRefused(f"the workspace path {path[:200]!r} holds a NUL or is too long")
    if path.startswith("/"):
        raise WorkspaceRefused(f"the workspace path {path!r} is absolute")
    parts = path.split("/")
    if any(p in ("", ".") for p in parts):
        raise WorkspaceRefused(f"the workspace path {path!r} has an empty or '.' part")
    if ".." in parts:
        raise WorkspaceRefused(f"the workspace path {path!r} leads out of the workspace (..)")
    if parts[0] == RESERVED:
        raise WorkspaceRefused(f"the workspace path {path!r} is in the workspace's own directory")
    return path


def check_link(path: str, target: str) -> str:
    """``target`` if the link at ``path`` stays inside the workspace, read as written.

    Chains of links are checked where they exist (``materialise`` and ``snapshot``
    resolve each link they make or read); here only its own text counts.
    """
    if not isinstance(target, str) or not target or "\x00" in target or len(target) > MAX_PATH:
        raise WorkspaceRefused(f"the link {path!r} has an empty or unreadable target")
    if target.startswith("/"):
        inside = posixpath.normpath(target)
        under = inside == CONTAINER_ROOT or inside.startswith(CONTAINER_ROOT + "/")
        if under and ".." not in target.split("/"):
            return target
        raise WorkspaceRefused(f"the link {path!r} points outside the workspace ({target!r})")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise WorkspaceRefused(f"the link {path!r} points outside the workspace ({target!r})")
    return target


class Manifest(Mapping[str, Entry]):
    """Every path of a workspace and its entry, by POSIX path relative to the root."""

    def __init__(self, entries: Mapping[str, Entry] | Iterable[tuple[str, Entry]] = ()) -> None:
        self._entries: dict[str, Entry] = dict(entries)
        self._bytes: bytes | None = None

    def __getitem__(self, path: str) -> Entry:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Manifest):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} paths, {self.digest[:12]})"

    @property
    def files(self) -> Iterator[tuple[str, Entry]]:
        """The regular files, with their entries."""
        return ((p, e) for p, e in self._entries.items() if e.kind == "file")

    @property
    def size(self) -> int:
        """The bytes of all its files."""
        return sum(e.size for _, e in self.files)

    def to_bytes(self) -> bytes:
        """The manifest as compact versioned JSON, compressed: what the store keeps."""
        if self._bytes is None:
            rows: list[list[Any]] = []
            for path in sorted(self._entries):
                e = self._entries[path]
                if e.kind == "file":
                    rows.append([path, "f", e.mode, e.digest, e.size])
                elif e.kind == "dir":
                    rows.append([path, "d", e.mode])
                else:
                    rows.append([path, "l", e.target])
            text = json.dumps({"v": VERSION, "e": rows}, separators=(",", ":"), ensure_ascii=False)
            self._bytes = zlib.compress(text.encode("utf-8", "surrogateescape"), 6)
        return self._bytes

    @property
    def digest(self) -> str:
        """The SHA-256 of :meth:`to_bytes`: what a workspace head names."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Read a manifest, checking all of it (WorkspaceRefused, one line, if anything is off)."""
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(data, MAX_BYTES)
        except zlib.error as exc:
            raise WorkspaceRefused(f"the workspace manifest is not zlib data ({exc})") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise WorkspaceRefused("the workspace manifest is cut short or too large")
        try:
            doc = json.loads(text.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError) as exc:
            raise WorkspaceRefused(f"the workspace manifest is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("v") != VERSION or set(doc) != {"v", "e"}:
            raise WorkspaceRefused(f"the workspace manifest is not version {VERSION}")
        rows = doc["e"]
        if not isinstance(rows, list):
            raise WorkspaceRefused("the workspace manifest has no list of entries")
        entries: dict[str, Entry] = {}
        for row in rows:
            path, entry = _read_row(row)
            if path in entries:
                raise WorkspaceRefused(f"the workspace path {path!r} is in the manifest twice")
            entries[path] = entry
        manifest = cls(entries)
        manifest.check()
        return manifest

    def check(self) -> None:
        """Refuse a path below a file or a link, and a link that leads out."""
        for path, entry in self._entries.items():
            check_path(path)
            parent = path
            while "/" in parent:
                parent = parent.rsplit("/", 1)[0]
                above = self._entries.get(parent)
                if above is not None and above.kind != "dir":
                    raise WorkspaceRefused(
                        f"the workspace path {path!r} is below {parent!r}, which is a {above.kind}"
                    )
            if entry.kind == "link":
                check_link(path, entry.target)


def _read_row(row: object) -> tuple[str, Entry]:
    if not isinstance(row, list) or len(row) < 3 or not isinstance(row[1], str):
        raise WorkspaceRefused(f"the workspace manifest has a malformed entry ({str(row)[:100]})")
    path = check_path(row[0])
    kind = _KINDS.get(row[1])
    if kind == "file" and len(row) == 5:
        mode, digest, size = row[2], row[3], row[4]
        if not is_digest(digest):
            raise WorkspaceRefused(f"the file {path!r} has a malformed digest")
        if not _is_int(size) or size < 0:
            raise WorkspaceRefused(f"the file {path!r} has a malformed size")
        return path, Entry("file", _mode(path, mode), digest, size)
    if kind == "dir" and len(row) == 3:
        return path, Entry("dir", _mode(path, row[2]))
    if kind == "link" and len(row) == 3:
        return path, Entry.link(check_link(path, row[2]))
    raise WorkspaceRefused(f"the workspace path {path!r} has a malformed entry")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mode(path: str, mode: object) -> int:
    if not _is_int(mode) or not 0 <= mode <= 0o7777:  # type: ignore[operator]
        raise WorkspaceRefused(f"the workspace path {path!r} has a malformed mode")
    return mode  # type: ignore[return-value]


# -- what a step changed ------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What a step did to a workspace: entries it set (added or changed), paths it removed."""

    set: dict[str, Entry] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.set or self.removed)

    @property
    def files(self) -> dict[str, Entry]:
        """The files it wrote (added or changed), by path."""
        return {p: e for p, e in self.set.items() if e.kind == "file"}


def diff(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> Changes:
    """What turns ``before`` into ``after`` (:func:`apply` of it on ``before`` gives ``after``).

    A removed directory is named with every path below it, so that applying the changes
    to a head that holds more (another step's files in it) removes only those too.
    """
    changed = {p: e for p, e in after.items() if before.get(p) != e}
    removed = frozenset(p for p in before if p not in after)
    return Changes(changed, removed)


def apply(head: Mapping[str, Entry], changes: Changes) -> Manifest:
    """``head`` with ``changes`` made: the workspace after a step, in the run's history.

    A removed path takes what lies below it with it (unless the changes set it again); a
    path set below a missing parent brings its parent directories (one set below a file
    or a link, which another step made meanwhile, turns that into a directory).
    """
    entries = dict(head)
    if changes.removed:
        gone = changes.removed
        for path in list(entries):
            if path in gone or _below_any(path, gone):
                del entries[path]
    for path, entry in changes.set.items():
        old = entries.get(path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            prefix = path + "/"
            for below in [p for p in entries if p.startswith(prefix)]:
                del entries[below]
        entries[path] = entry
    for path in changes.set:
        parent = path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            above = entries.get(parent)
            if above is None or above.kind != "dir":
                entries[parent] = Entry.dir()
    return Manifest(entries)


def _below_any(path: str, removed: frozenset[str]) -> bool:
    parent = path
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in removed:
            return True
    return False
