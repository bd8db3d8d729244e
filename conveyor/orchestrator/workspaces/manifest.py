"""What a workspace holds, as data: ``Entry``, ``Manifest``, and the ``Changes`` of a step.

A manifest names every path of a workspace (POSIX, relative to its root) with its kind,
permission bits, and either the SHA-256 and size of a file's content or the target of a
link. It also says where the store keeps the contents that travel in packs (many small
files stored as one object, see ``packs``): the pack's SHA-256 and the offset there; a
content it does not place is a blob of its own. Its bytes are compact versioned JSON
compressed with zlib, and its digest is the SHA-256 of those bytes, so equal workspaces
stored alike have equal digests. Two manifests are equal when their paths and entries
are, wherever their contents are stored.

Version 2 adds the packs (``"p"``: their digests; a file's row ends with the pack's
number in that list and the offset); version 1 (no packs) is still read.

``Manifest.from_bytes`` trusts nothing it reads (it may come from a store someone else
can write to): any path that is absolute, holds ``..``, ``.``, an empty part or a NUL,
lies under the workspace's own ``.conveyor/`` directory, or sits below a file or a link;
any link whose target leads out of the workspace; any malformed digest, size, mode or pack
place, or a content placed in two places: each is refused as ``WorkspaceRefused`` with
one line naming it.

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
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.orchestrator.errors import WorkspaceRefused

#: The workspace's own directory (step outputs files): never part of a manifest.
RESERVED = ".conveyor"
#: Where a container sees the workspace: the one place an absolute link may point.
CONTAINER_ROOT = "/workspace"
VERSION = 2
#: Versions still read (1: no packs).
READS = (1, 2)
#: A manifest inflates to at most this many bytes (about a million paths).
MAX_BYTES = 256 * 1024 * 1024
MAX_PATH = 4096

Kind = Literal["file", "dir", "link"]
_DIGEST = re.compile(r"[0-9a-f]{64}")
_ODD = frozenset(("", ".", ".."))


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
    bad = _ODD.intersection(parts)
    if bad and bad != {".."}:
        raise WorkspaceRefused(f"the workspace path {path!r} has an empty or '.' part")
    if bad:
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


#: Where a content is kept inside a pack: the pack's SHA-256 and the offset there.
Place = tuple[str, int]

#: Manifests read lately in this process, by the SHA-256 of their bytes: at most
#: ``KEEP``, each of at most ``KEEP_BYTES`` (compressed; about 20,000 paths).
KEEP = 8
KEEP_BYTES = 1024 * 1024
_READ: OrderedDict[bytes, Manifest] = OrderedDict()
_READ_LOCK = threading.Lock()


class Manifest(Mapping[str, Entry]):
    """Every path of a workspace and its entry, by POSIX path relative to the root.

    ``packed`` says, for contents kept in packs, where (by content digest); only those
    of its own files are written out. A manifest is never changed once made (``packed``
    included): :meth:`from_bytes` hands the same one to every reader of the same bytes.
    """

    def __init__(
        self,
        entries: Mapping[str, Entry] | Iterable[tuple[str, Entry]] = (),
        packed: Mapping[str, Place] | None = None,
    ) -> None:
        self._entries: dict[str, Entry] = dict(entries)
        self.packed: dict[str, Place] = dict(packed or {})
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
        return hash(frozenset(self._entries.items()))

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
            packs: dict[str, int] = {}
            for path in sorted(self._entries):
                e = self._entries[path]
                if e.kind == "file":
                    row: list[Any] = [path, "f", e.mode, e.digest, e.size]
                    place = self.packed.get(e.digest)
                    if place is not None:
                        row += [packs.setdefault(place[0], len(packs)), place[1]]
                    rows.append(row)
                elif e.kind == "dir":
                    rows.append([path, "d", e.mode])
                else:
                    rows.append([path, "l", e.target])
            doc = {"v": VERSION, "e": rows, "p": list(packs)}
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
            self._bytes = zlib.compress(text.encode("utf-8", "surrogateescape"), 1)
        return self._bytes

    @property
    def digest(self) -> str:
        """The SHA-256 of :meth:`to_bytes`: what a workspace head names."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Read a manifest, checking all of it (WorkspaceRefused, one line, if anything is off).

        A manifest read lately in this process is not read again (each step of a run on
        this host reads its run's manifests several times): the same bytes give the same
        manifest, whose digest is that of these bytes.
        """
        key = hashlib.sha256(data).digest()
        with _READ_LOCK:
            found = _READ.get(key)
            if found is not None:
                _READ.move_to_end(key)
                return found
        manifest = cls._parse(data)
        manifest._bytes = bytes(data)
        if len(data) <= KEEP_BYTES:
            with _READ_LOCK:
                _READ[key] = manifest
                while len(_READ) > KEEP:
                    _READ.popitem(last=False)
        return manifest

    @classmethod
    def _parse(cls, data: bytes) -> Manifest:
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
        version = doc.get("v") if isinstance(doc, dict) else None
        if version not in READS or set(doc) != ({"v", "e"} if version == 1 else {"v", "e", "p"}):
            raise WorkspaceRefused("the workspace manifest is not version 1 or 2")
        rows, packs = doc["e"], doc.get("p", [])
        if not isinstance(rows, list):
            raise WorkspaceRefused("the workspace manifest has no list of entries")
        if not isinstance(packs, list) or not all(is_digest(p) for p in packs):
            raise WorkspaceRefused("the workspace manifest has a malformed list of packs")
        entries: dict[str, Entry] = {}
        packed: dict[str, Place] = {}
        for row in rows:
            path, entry, place = _read_row(row, packs)
            if path in entries:
                raise WorkspaceRefused(f"the workspace path {path!r} is in the manifest twice")
            entries[path] = entry
            if place is not None and packed.setdefault(entry.digest, place) != place:
                raise WorkspaceRefused(
                    f"the workspace manifest places the content of {path!r} in two places"
                )
        manifest = cls(entries, packed)
        manifest.check(paths=False)  # each path and link was checked as it was read
        return manifest

    def check(self, *, paths: bool = True) -> None:
        """Refuse a path below a file or a link, and a link that leads out (and, with
        ``paths``, any path :func:`check_path` refuses)."""
        entries = self._entries
        for path, entry in entries.items():
            if paths:
                check_path(path)
                if entry.kind == "link":
                    check_link(path, entry.target)
            parent = path
            while "/" in parent:
                parent = parent.rpartition("/")[0]
                above = entries.get(parent)
                if above is None:
                    continue  # not named: a directory, made on the way
                if above.kind != "dir":
                    raise WorkspaceRefused(
                        f"the workspace path {path!r} is below {parent!r}, which is a {above.kind}"
                    )
                break  # a directory, whose own parents are checked in its turn


def _read_row(row: object, packs: list[str]) -> tuple[str, Entry, Place | None]:
    if type(row) is not list or len(row) < 3 or type(row[1]) is not str:
        raise WorkspaceRefused(f"the workspace manifest has a malformed entry ({str(row)[:100]})")
    path = check_path(row[0])
    letter, length = row[1], len(row)
    if letter == "f" and length in (5, 7):
        mode, digest, size = row[2], row[3], row[4]
        if type(digest) is not str or _DIGEST.fullmatch(digest) is None:
            raise WorkspaceRefused(f"the file {path!r} has a malformed digest")
        if type(size) is not int or size < 0:
            raise WorkspaceRefused(f"the file {path!r} has a malformed size")
        place: Place | None = None
        if length == 7:
            number, offset = row[5], row[6]
            if type(number) is not int or not 0 <= number < len(packs):
                raise WorkspaceRefused(f"the file {path!r} names a pack the manifest lacks")
            if type(offset) is not int or offset < 0:
                raise WorkspaceRefused(f"the file {path!r} has a malformed place in its pack")
            place = (packs[number], offset)
        return path, Entry("file", _mode(path, mode), digest, size), place
    if letter == "d" and length == 3:
        return path, Entry("dir", _mode(path, row[2])), None
    if letter == "l" and length == 3:
        return path, Entry.link(check_link(path, row[2])), None
    raise WorkspaceRefused(f"the workspace path {path!r} has a malformed entry")


def _mode(path: str, mode: object) -> int:
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        raise WorkspaceRefused(f"the workspace path {path!r} has a malformed mode")
    return mode


# -- what a step changed ------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What a step did to a workspace: entries it set (added or changed), paths it removed.

    ``packed`` says where the store keeps the contents of the files it set that travel
    in packs (filled in as they are stored; :func:`apply` carries it over).
    """

    set: dict[str, Entry] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    packed: dict[str, Place] = field(default_factory=dict)

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
    or a link, which another step made meanwhile, turns that into a directory). Where
    the head keeps a content, it stays; the changes place the rest.
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
    packed = getattr(head, "packed", {})
    return Manifest(entries, {**changes.packed, **packed} if changes.packed else packed)


def _below_any(path: str, removed: frozenset[str]) -> bool:
    parent = path
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in removed:
            return True
    return False
