"""A workspace on this host's disk: reading it into a manifest, bringing it to one.

:func:`snapshot` walks the directory without following any link and hashes only files
whose size, times or inode changed since this host last hashed or wrote them (the
``LocalIndex`` cache). Pipes, sockets and devices are skipped and named in
``SnapshotStats.skipped``: their content cannot travel, and a tool's leftover socket
should not fail a build. A file that cannot be read, or a link that leads out of the
workspace, is refused with one line naming it.

:func:`materialise` changes the directory from what this host's index says it holds
to a target manifest, and touches nothing else: a path neither names is left alone (a
step of the run running at the same time on this host may be writing it). Content
already on this host (any file the index knows with that digest) is copied here
rather than downloaded; downloads stream into a temporary file beside the workspace,
checked against their SHA-256 as they go, and are renamed into place whole. Every
directory on the way is opened relative to its parent without following links, so
nothing is ever written outside the workspace; file modes lose setuid, setgid and
sticky bits, and directories keep their owner's access (steps write there), as
unpacked source archives do. Modification times are not carried over.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from conveyor.orchestrator.contracts.artifacts import WorkspaceBlobs
from conveyor.orchestrator.errors import ArtifactNotFound, ConveyorError, WorkspaceRefused

from .index import LocalIndex, StatKey, stat_key
from .manifest import RESERVED, Entry, Manifest, check_link, diff
from .packs import Member, Range, ranges, unpack

CHUNK = 1024 * 1024
#: Files hashed, copied or fetched at once (hashlib and file I/O let go of the GIL).
THREADS = min(8, (os.cpu_count() or 2) * 2)
#: Small files are hashed (or written) this many to a task, up to about this many bytes.
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024
#: A file modified this close to a snapshot may change again within the same clock tick
#: of its file system: its digest is used, but not trusted by the cache.
RACY_NS = 50_000_000
#: Directories kept open at once while a workspace is materialised.
OPEN_DIRS = 256
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class SnapshotStats:
    """What a snapshot read."""

    files: int = 0
    #: Files whose content was read and hashed (the rest came from the cache).
    hashed: int = 0
    hashed_bytes: int = 0
    #: Pipes, sockets and devices: left out of the manifest.
    skipped: list[str] = field(default_factory=list)


@dataclass
class MaterialiseStats:
    """What bringing a workspace to a manifest took."""

    files_fetched: int = 0
    bytes_fetched: int = 0
    #: Files whose content was copied from another place on this host instead.
    files_reused: int = 0
    bytes_reused: int = 0
    #: Paths removed (the manifest no longer has them).
    removed: int = 0
    seconds: float = 0.0


# -- snapshot -----------------------------------------------------------------------------


def snapshot(root: Path, index: LocalIndex, stats: SnapshotStats | None = None) -> Manifest:
    """The manifest of the workspace at ``root`` (empty when there is none).

    Updates ``index.cache`` (the caller saves it); WorkspaceRefused, one line, for an
    unreadable file or a link out of the workspace.
    """
    stats = stats if stats is not None else SnapshotStats()
    entries: dict[str, Entry] = {}
    todo: list[tuple[str, str, int]] = []  # (relative path, absolute path, size) to hash
    keys: dict[str, StatKey] = {}
    started = time.time_ns()
    try:
        real_root = os.path.realpath(root)
        _walk(str(root), "", real_root, entries, todo, keys, index, stats)
    except FileNotFoundError:
        if not os.path.isdir(root):
            return Manifest()
        raise
    cache: dict[str, tuple[StatKey, str]] = {}
    for path, entry in entries.items():
        if entry.kind == "file" and entry.digest:  # from the cache; the rest are hashed below
            cache[path] = (keys[path], entry.digest)
    for path, found in _hash_all(todo):
        if found is None:  # gone since the walk: a step of the run deleted it meanwhile
            del entries[path]
            continue
        key, digest = found
        size = key[0]
        entries[path] = Entry.file(digest, size, entries[path].mode)
        stats.hashed += 1
        stats.hashed_bytes += size
        if key[1] < started - RACY_NS:
            cache[path] = (key, digest)
    stats.files = sum(1 for e in entries.values() if e.kind == "file")
    index.cache = cache
    return Manifest(entries)


def _walk(
    directory: str,
    prefix: str,
    real_root: str,
    entries: dict[str, Entry],
    todo: list[tuple[str, str, int]],
    keys: dict[str, StatKey],
    index: LocalIndex,
    stats: SnapshotStats,
) -> None:
    with os.scandir(directory) as found:
        items = list(found)
    for item in items:
        if not prefix and item.name == RESERVED:
            continue
        path = prefix + item.name
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entries[path] = Entry.dir(stat.S_IMODE(mode))
            try:
                _walk(item.path, path + "/", real_root, entries, todo, keys, index, stats)
            except PermissionError:
                raise WorkspaceRefused(f"the workspace directory {path!r} cannot be read") from None
        elif stat.S_ISREG(mode):
            key = stat_key(st)
            keys[path] = key
            cached = index.cache.get(path)
            if cached is not None and cached[0] == key:
                entries[path] = Entry.file(cached[1], st.st_size, stat.S_IMODE(mode))
            else:
                entries[path] = Entry.file("", st.st_size, stat.S_IMODE(mode))
                todo.append((path, item.path, st.st_size))
        elif stat.S_ISLNK(mode):
            target = os.readlink(item.path)
            check_link(path, target)
            if not target.startswith("/") and not _inside(real_root, os.path.realpath(item.path)):
                raise WorkspaceRefused(
                    f"the link {path!r} points outside the workspace ({target!r})"
                )
            entries[path] = Entry.link(target)
        else:
            stats.skipped.append(path)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hash_all(
    todo: list[tuple[str, str, int]],
) -> Iterator[tuple[str, tuple[StatKey, str] | None]]:
    """Hash each file of ``todo`` (path, absolute path, size), small ones a batch per task."""
    if len(todo) < 4:
        for path, full, _ in todo:
            yield path, _hash_file(path, full)
        return
    batches: list[list[tuple[str, str, int]]] = [[]]
    filled = 0
    for item in todo:
        if len(batches[-1]) >= BATCH_FILES or filled >= BATCH_BYTES:
            batches.append([])
            filled = 0
        batches[-1].append(item)
        filled += item[2]

    def hash_batch(batch: list[tuple[str, str, int]]) -> list[tuple[StatKey, str] | None]:
        return [_hash_file(path, full) for path, full, _ in batch]

    with ThreadPoolExecutor(THREADS, thread_name_prefix="conveyor-hash") as pool:
        for batch, found in zip(batches, pool.map(hash_batch, batches), strict=True):
            yield from zip((path for path, _, _ in batch), found, strict=True)


def _hash_file(path: str, full: str) -> tuple[StatKey, str] | None:
    """The stat key and SHA-256 of a file, read without following a link; None if gone."""
    for _ in range(3):
        try:
            fd = os.open(full, _READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise WorkspaceRefused(f"{path!r} cannot be read: {exc.strerror}") from None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return None  # replaced by something else meanwhile
            digest = hashlib.sha256()
            while piece := os.read(fd, CHUNK):
                digest.update(piece)
            after = os.fstat(fd)
        except OSError as exc:
            raise WorkspaceRefused(f"{path!r} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if stat_key(before) == stat_key(after):
            return stat_key(after), digest.hexdigest()
    raise WorkspaceRefused(f"{path!r} kept changing while it was read")


class Inside:
    """Files of a workspace read whole, each opened below directories opened one part at
    a time without following links (so a link put on the way since the snapshot is
    never followed out), and only while its status is what the snapshot saw.

    Each thread keeps its own open directories; ``close`` closes them all.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._local = threading.local()
        self._all: list[dict[str, int]] = []
        self._lock = threading.Lock()

    def read(self, path: str, size: int, key: StatKey | None) -> bytes:
        """The content of ``path``; WorkspaceRefused if it changed since the snapshot."""
        head, _, name = path.rpartition("/")
        try:
            fd = os.open(name, _READ, dir_fd=self._dir(head, path))
        except OSError:
            raise WorkspaceRefused(f"{path!r} changed while it was being published") from None
        try:
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode)
                or st.st_size != size
                or key not in (None, stat_key(st))
            ):
                raise WorkspaceRefused(f"{path!r} changed while it was being published")
            pieces = []
            left = size
            while left > 0 and (piece := os.read(fd, left)):
                pieces.append(piece)
                left -= len(piece)
            if stat_key(os.fstat(fd)) != stat_key(st):
                raise WorkspaceRefused(f"{path!r} changed while it was being published")
        finally:
            os.close(fd)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _dir(self, path: str, why: str) -> int:
        opened: dict[str, int] | None = getattr(self._local, "dirs", None)
        if opened is None:
            opened = self._local.dirs = {}
            with self._lock:
                self._all.append(opened)
        fd = opened.get(path)
        if fd is not None:
            return fd
        try:
            if not path:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                head, _, name = path.rpartition("/")
                fd = os.open(name, _DIR, dir_fd=self._dir(head, why))
        except OSError:
            raise WorkspaceRefused(f"{why!r} changed while it was being published") from None
        if len(opened) >= OPEN_DIRS:
            oldest = next(p for p in opened if p)  # the root stays: every path needs it
            os.close(opened.pop(oldest))
        opened[path] = fd
        return fd

    def close(self) -> None:
        with self._lock:
            for opened in self._all:
                for fd in opened.values():
                    os.close(fd)
                opened.clear()


# -- materialise --------------------------------------------------------------------------


class _Tree:
    """Directories under a root, opened one part at a time without following links."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root_fd = os.open(root, _DIR)
        self._open: dict[str, int] = {}
        self.lock = threading.RLock()

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        os.close(self.root_fd)

    def parent(self, path: str, *, create: bool, why: str) -> tuple[int, str] | None:
        """The open directory ``path`` is in, and its name there; None if that is missing."""
        head, _, name = path.rpartition("/")
        fd = self.dir(head, create=create, why=why)
        return None if fd is None else (fd, name)

    def dir(self, path: str, *, create: bool, why: str) -> int | None:
        """The directory ``path`` opened (made when ``create``); None if missing."""
        if not path:
            return self.root_fd
        with self.lock:
            fd = self._open.get(path)
            if fd is not None:
                return fd
            up = self.parent(path, create=create, why=why)
            if up is None:
                return None
            parent, name = up
            try:
                fd = os.open(name, _DIR, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                fd = self._reopen(parent, name, path, why)
            except OSError:
                fd = self._reopen(parent, name, path, why)
            if len(self._open) >= OPEN_DIRS:
                os.close(self._open.pop(next(iter(self._open))))
            self._open[path] = fd
            return fd

    def _reopen(self, parent: int, name: str, path: str, why: str) -> int:
        try:
            return os.open(name, _DIR, dir_fd=parent)
        except OSError:
            pass
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError as exc:
            raise WorkspaceRefused(f"{why!r} cannot be written: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            raise WorkspaceRefused(f"{why!r} would be written through the link {path!r}")
        raise WorkspaceRefused(f"{why!r} is inside {path!r}, which is not a directory")

    def forget(self, path: str) -> None:
        """Close ``path`` and what is below it (they were removed)."""
        with self.lock:
            for name in [p for p in self._open if p == path or p.startswith(path + "/")]:
                os.close(self._open.pop(name))


def materialise(
    root: Path,
    target: Manifest,
    blobs: WorkspaceBlobs,
    index: LocalIndex,
    run_id: str,
) -> MaterialiseStats:
    """Bring the workspace at ``root`` from what ``index`` says it holds to ``target``.

    Call it inside ``index.locked()``; it sets ``index.manifest`` to ``target`` and its
    cache to the files written, and the caller saves. WorkspaceRefused, one line, for a
    blob that is missing or does not match its digest, or a path that would be written
    through a link; the directory may then hold part of the change, and the index is left
    as it was, so the next attempt makes it again.
    """
    started = time.perf_counter()
    stats = MaterialiseStats()
    current = index.manifest
    if current is None:  # never held here: what the directory holds now is the baseline
        current = snapshot(root, index)
    changes = diff(current, target)
    if not changes and root.is_dir():
        index.manifest = target
        stats.seconds = time.perf_counter() - started
        return stats
    tree = _Tree(root)
    try:
        _materialise(root, tree, current, target, blobs, index, run_id, stats)
    finally:
        tree.close()
    index.manifest = target
    stats.seconds = time.perf_counter() - started
    return stats


def _materialise(
    root: Path,
    tree: _Tree,
    current: Manifest,
    target: Manifest,
    blobs: WorkspaceBlobs,
    index: LocalIndex,
    run_id: str,
    stats: MaterialiseStats,
) -> None:
    # What changes kind goes first (something else stands there); what simply goes, last,
    # so that a file renamed is copied from its old place rather than fetched.
    replaced = [p for p in current if p in target and current[p].kind != target[p].kind]
    _remove_all(tree, replaced, index, stats, replaced=True)
    new_dirs = [p for p, e in target.items() if e.kind == "dir" and current.get(p) != e]
    for path in sorted(new_dirs, key=lambda p: p.count("/")):
        tree.dir(path, create=True, why=path)
    wanted: dict[str, list[str]] = {}
    for path, entry in target.items():
        old = current.get(path)
        if entry.kind == "file":
            if old is not None and old.kind == "file" and old.digest == entry.digest:
                if old.mode != entry.mode:
                    _chmod_file(tree, path, entry.mode, index)
            else:
                wanted.setdefault(entry.digest, []).append(path)
        elif entry.kind == "link" and old != entry:
            _place_link(root, tree, path, entry.target)
    if wanted:
        _write_files(root, tree, current, target, wanted, blobs, index, run_id, stats)
    _check_links(root, tree, current, target)
    _remove_all(tree, [p for p in current if p not in target], index, stats, replaced=False)
    for path in sorted(new_dirs, key=lambda p: p.count("/"), reverse=True):
        with tree.lock:
            fd = tree.dir(path, create=True, why=path)
            if fd is not None:
                os.fchmod(fd, (target[path].mode & 0o777) | 0o700)


def _remove_all(
    tree: _Tree, paths: list[str], index: LocalIndex, stats: MaterialiseStats, *, replaced: bool
) -> None:
    for path in sorted(paths, key=lambda p: p.count("/"), reverse=True):
        if _remove(tree, path, replaced=replaced):
            stats.removed += 1
        index.cache.pop(path, None)


def _remove(tree: _Tree, path: str, *, replaced: bool) -> bool:
    """Remove ``path``; a directory only when empty, unless something else must stand there."""
    with tree.lock:
        up = tree.parent(path, create=False, why=path)
        if up is None:
            return False
        parent, name = up
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            tree.forget(path)
            try:
                if replaced:
                    shutil.rmtree(name, dir_fd=parent)
                else:
                    os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False  # holds what a step running now wrote: it stays
                raise WorkspaceRefused(f"{path!r} could not be removed: {exc.strerror}") from None
        else:
            os.unlink(name, dir_fd=parent)
        return True


def _chmod_file(tree: _Tree, path: str, mode: int, index: LocalIndex) -> None:
    with tree.lock:
        up = tree.parent(path, create=True, why=path)
        assert up is not None
        parent, name = up
        fd = os.open(name, _READ, dir_fd=parent)
        try:
            os.fchmod(fd, mode & 0o777)
            cached = index.cache.get(path)
            if cached is not None:
                index.cache[path] = (stat_key(os.fstat(fd)), cached[1])
        finally:
            os.close(fd)


def _place_link(root: Path, tree: _Tree, path: str, target: str) -> None:
    tmp = _temp_name(root, "link")
    os.symlink(target, tmp)
    try:
        with tree.lock:
            up = tree.parent(path, create=True, why=path)
            assert up is not None
            _rename_into(tree, tmp, up[0], up[1], path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _check_links(root: Path, tree: _Tree, current: Manifest, target: Manifest) -> None:
    """Refuse (and remove) a link just made that leads out once every link exists."""
    real_root = os.path.realpath(root)
    for path, entry in target.items():
        if entry.kind != "link" or current.get(path) == entry or entry.target.startswith("/"):
            continue
        if not _inside(real_root, os.path.realpath(root / path)):
            with tree.lock:
                up = tree.parent(path, create=False, why=path)
                if up is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(up[1], dir_fd=up[0])
            raise WorkspaceRefused(
                f"the link {path!r} points outside the workspace ({entry.target!r})"
            )


def _temp_name(root: Path, what: str) -> str:
    """A fresh name beside the workspace (same file system, out of every step's sight)."""
    return os.path.join(root.parent, f".{root.name}.{what}-{os.urandom(8).hex()}")


def _rename_into(tree: _Tree, tmp: str, parent: int, name: str, path: str) -> None:
    try:
        os.rename(tmp, name, dst_dir_fd=parent)
    except IsADirectoryError:
        raise WorkspaceRefused(f"{path!r} is a directory here (a step made it meanwhile)") from None
    except OSError as exc:
        raise WorkspaceRefused(f"{path!r} could not be written: {exc.strerror}") from None


#: A content fetched or copied: its digest, the temporary file holding it, whether it
#: was copied from this host.
_Got = tuple[str, str, bool]


class _Fetch:
    """Where each wanted content comes from: this host, a pack, or a blob of its own."""

    def __init__(
        self,
        root: Path,
        tree: _Tree,
        current: Manifest,
        target: Manifest,
        wanted: dict[str, list[str]],
        blobs: WorkspaceBlobs,
        run_id: str,
    ) -> None:
        self.root, self.tree, self.target, self.wanted = root, tree, target, wanted
        self.blobs, self.run_id = blobs, run_id
        self.local: dict[str, str] = {}
        for path, entry in current.files:
            if entry.digest in wanted and target.get(path, entry) == entry:
                self.local.setdefault(entry.digest, path)  # not overwritten meanwhile

    def tasks(self) -> list[Callable[[], list[_Got]]]:
        """Packed contents a range at a time (neighbours together); the rest one by one."""
        packed = [d for d in self.wanted if d not in self.local and d in self.target.packed]
        found = ranges(self._member(d) for d in packed)
        alone = [d for d in self.wanted if d in self.local or d not in self.target.packed]
        return [*(partial(self.range, r) for r in found), *(partial(self.one, d) for d in alone)]

    def _member(self, digest: str) -> tuple[Member, str]:
        first = self.wanted[digest][0]
        pack, offset = self.target.packed[digest]
        return Member(digest, self.target[first].size, offset, first), pack

    def one(self, digest: str) -> list[_Got]:
        source = self.local.get(digest)
        if source is not None:
            tmp = _copy_local(self.root, self.tree, source, digest)
            if tmp is not None:
                return [(digest, tmp, True)]
        if digest in self.target.packed:  # the copy here changed meanwhile: from its pack
            return self.range(ranges([self._member(digest)])[0])
        first = self.wanted[digest][0]
        return [(digest, _download(self.root, self.blobs, self.run_id, digest, first), False)]

    def range(self, where: Range) -> list[_Got]:
        done: list[_Got] = []
        try:
            for found, data in unpack(self.blobs, self.run_id, where):
                done.append((found.digest, _write_bytes(self.root, data), False))
        except BaseException:
            for _, tmp, _ in done:
                os.unlink(tmp)
            raise
        return done


def _write_files(
    root: Path,
    tree: _Tree,
    current: Manifest,
    target: Manifest,
    wanted: dict[str, list[str]],
    blobs: WorkspaceBlobs,
    index: LocalIndex,
    run_id: str,
    stats: MaterialiseStats,
) -> None:
    """Fetch (or copy from this host) each digest once, then put it at each of its paths."""
    tasks = _Fetch(root, tree, current, target, wanted, blobs, run_id).tasks()
    with ThreadPoolExecutor(THREADS, thread_name_prefix="conveyor-fetch") as pool:
        futures: list[Future[list[_Got]]] = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                for digest, tmp, reused in future.result():
                    size = target[wanted[digest][0]].size
                    if reused:
                        stats.files_reused += 1
                        stats.bytes_reused += size
                    else:
                        stats.files_fetched += 1
                        stats.bytes_fetched += size
                    _place_files(root, tree, tmp, digest, wanted[digest], target, index, stats)
        except BaseException:  # what was fetched and not placed goes
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled() and future.exception() is None:
                    for _, tmp, _ in future.result():
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
            raise


def _place_files(
    root: Path,
    tree: _Tree,
    tmp: str,
    digest: str,
    paths: list[str],
    target: Manifest,
    index: LocalIndex,
    stats: MaterialiseStats,
) -> None:
    for n, path in enumerate(paths):
        entry = target[path]
        last = n == len(paths) - 1
        source = tmp if last else _copy_temp(root, tmp)
        if not last:
            stats.files_reused += 1
            stats.bytes_reused += entry.size
        os.chmod(source, entry.mode & 0o777)
        with tree.lock:
            up = tree.parent(path, create=True, why=path)
            assert up is not None
            parent, name = up
            _rename_into(tree, source, parent, name, path)
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        index.cache[path] = (stat_key(st), digest)


def _copy_temp(root: Path, tmp: str) -> str:
    copy = _temp_name(root, "copy")
    with open(tmp, "rb") as src, open(copy, "xb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    return copy


def _copy_local(root: Path, tree: _Tree, source: str, digest: str) -> str | None:
    """A temporary copy of ``source`` if it still holds ``digest``; None otherwise."""
    with tree.lock:
        up = tree.parent(source, create=False, why=source)
        if up is None:
            return None
        try:
            fd = os.open(up[1], _READ, dir_fd=up[0])
        except OSError:
            return None
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        tmp, ok = _write_temp(root, "copy", src, digest)
    if not ok:
        os.unlink(tmp)
        return None
    return tmp


def _download(root: Path, blobs: WorkspaceBlobs, run_id: str, digest: str, path: str) -> str:
    try:
        stream = blobs.open_blob(run_id, digest)
    except ArtifactNotFound:
        raise WorkspaceRefused(
            f"blob {digest} of {path!r} is missing from the artifact store"
        ) from None
    except ConveyorError as exc:
        raise WorkspaceRefused(f"blob {digest} of {path!r} could not be read: {exc}") from None
    with stream:
        tmp, ok = _write_temp(root, "fetch", stream, digest)
    if not ok:
        os.unlink(tmp)
        raise WorkspaceRefused(f"blob {digest} of {path!r} does not match its digest")
    return tmp


def _write_bytes(root: Path, data: memoryview) -> str:
    """A new file beside the workspace holding ``data`` (checked already); its name."""
    handle, tmp = tempfile.mkstemp(dir=root.parent, prefix=f".{root.name}.fetch-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _write_temp(root: Path, what: str, stream: BinaryIO, digest: str) -> tuple[str, bool]:
    """Stream into a new file beside the workspace; its name and whether it hashed to ``digest``."""
    handle, tmp = tempfile.mkstemp(dir=root.parent, prefix=f".{root.name}.{what}-")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            read: Callable[[int], bytes] = stream.read
            while piece := read(CHUNK):
                hasher.update(piece)
                out.write(piece)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, hasher.hexdigest() == digest
