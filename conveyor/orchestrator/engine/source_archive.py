"""A run's source as an archive: how ``conveyor submit --source DIR`` sends it.

``conveyor run --source`` copies a directory into a workspace on the same host
(``sources.py``). A distributed run has no such host: the CLI packs the directory into
a gzipped tar (:func:`pack_source`, the same names left out as the copy leaves out),
the API stores it through the artifact store beside the run's artifacts, where no key
can reach it (``RunSources``), before it creates the run under that id with the
archive's SHA-256 in the run's plan (``ExecutionPlan.workspace_source``). On every worker
host, the first step of the run that opens the workspace unpacks it there
(:class:`WorkspaceSeeder`) before the step runs. It goes with the run's artifacts.

Unpacking trusts nothing in the archive (:func:`unpack_source`): every name is a plain
relative path (no ``/`` at the start, no ``..``), nothing is written through a link,
links stay inside the workspace (checked once all of them exist, so no chain of links
leads out), there are no hard links, devices or pipes, modes lose their setuid, setgid
and sticky bits, and the total size, the number of entries and the size of any tar
header are bounded before anything is read. The archive's SHA-256 is checked against
the run's as it streams. Everything is unpacked beside the workspace and renamed into
place once whole: a refused archive leaves no workspace behind, and the step fails with
one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from conveyor.orchestrator.contracts import ArtifactStore, RunSources
from conveyor.orchestrator.errors import (
    ArtifactNotFound,
    ConveyorError,
    SourceRefused,
    StepFailed,
)
from conveyor.orchestrator.settings import Settings

from .sources import SKIPPED

CHUNK = 1024 * 1024
#: The largest tar header (a pax record, a GNU long name) read: names are never longer.
MAX_HEADER = 1024 * 1024
#: The workspace's own directory (outputs files): never taken from an archive.
RESERVED = ".conveyor"
_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, *tarfile.GNU_TYPES[:2])


@dataclass(frozen=True)
class Limits:
    """How much an archive may unpack to."""

    max_bytes: int
    max_files: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits the settings give."""
        return cls(settings.max_source_unpacked_bytes, settings.max_source_files)


# -- packing (the CLI) --------------------------------------------------------------------


@dataclass
class Packed:
    """What :func:`pack_source` wrote."""

    path: Path
    entries: int = 0
    size: int = 0
    #: Links left out because they lead outside the directory (or are absolute).
    left_out: list[str] = field(default_factory=list)


def pack_source(directory: Path, dest: Path) -> Packed:
    """Pack ``directory`` into the gzipped tar ``dest``.

    Left out, at any depth: ``.git``, ``.conveyor``, ``.venv``, ``__pycache__``, and
    special files (pipes, sockets, devices). Symbolic links are kept as links, never
    followed; a link that is absolute or leads outside ``directory`` is left out (and
    named in ``left_out``): a workspace refuses it. Modes and modification times are
    kept; owners are not.
    """
    root = directory.resolve()
    if not root.is_dir():
        raise ConveyorError(f"source {directory} is not a directory")
    packed = Packed(dest)
    try:
        with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
            _pack_dir(tar, root, root, "", packed)
        packed.size = dest.stat().st_size
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConveyorError(f"could not pack {directory}: {exc.strerror or exc}{where}") from None
    return packed


def _pack_dir(tar: tarfile.TarFile, root: Path, path: Path, prefix: str, packed: Packed) -> None:
    with os.scandir(path) as found:
        entries = sorted(found, key=lambda e: e.name)
    for entry in entries:
        if entry.name in SKIPPED:
            continue
        name = f"{prefix}{entry.name}"
        info = tarfile.TarInfo(name)
        st = entry.stat(follow_symlinks=False)
        info.mtime, info.mode = int(st.st_mtime), stat.S_IMODE(st.st_mode) & 0o777
        if entry.is_symlink():
            target = os.readlink(entry.path)
            if os.path.isabs(target) or not _inside(root, os.path.realpath(entry.path)):
                packed.left_out.append(name)
                continue
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
        elif entry.is_dir(follow_symlinks=False):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            _pack_dir(tar, root, Path(entry.path), name + "/", packed)
        elif entry.is_file(follow_symlinks=False):
            info.size = st.st_size
            with open(entry.path, "rb") as content:
                tar.addfile(info, content)
        else:
            continue  # a pipe, socket or device: reading one could block for ever
        packed.entries += 1


def _inside(root: Path | str, path: str) -> bool:
    base = str(root)
    return path == base or path.startswith(base.rstrip("/") + "/")


# -- unpacking (a worker) ---------------------------------------------------------------


class _Header(tarfile.TarInfo):
    """A member whose extended header (pax, GNU long name) is refused past MAX_HEADER
    before tarfile reads it into memory."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _HEADERS and self.size > MAX_HEADER:
            raise SourceRefused(f"a tar header of {self.size} bytes (at most {MAX_HEADER})")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


class _Gunzip:
    """The tar inside a gzip stream, hashing the compressed bytes as they go by.

    Its own decompressor rather than tarfile's, so that an archive cut short (no gzip
    trailer, a wrong CRC) is refused rather than read as a shorter one; no read
    inflates more than it was asked for.
    """

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._out = b""
        self._tail = b""

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size < 0 else size
        while len(self._out) < size and not self._zlib.eof:
            if not self._tail:
                self._tail = self.inner.read(CHUNK)
                self.digest.update(self._tail)
                if not self._tail:
                    break
            self._out += self._zlib.decompress(self._tail, size - len(self._out))
            self._tail = self._zlib.unconsumed_tail
        data, self._out = self._out[:size], self._out[size:]
        return data

    def finish(self) -> str:
        """Read to the end; the SHA-256 of the compressed bytes (SourceRefused if cut)."""
        while self.read(CHUNK):
            pass
        while raw := self.inner.read(CHUNK):
            self.digest.update(raw)
        if not self._zlib.eof:
            raise SourceRefused("the archive is cut short (its gzip stream does not end)")
        return self.digest.hexdigest()


def unpack_source(
    stream: IO[bytes], dest: Path, limits: Limits, checksum: str | None = None
) -> int:
    """Unpack the gzipped tar ``stream`` into the empty directory ``dest``; its entries.

    SourceRefused (one line) for anything unsafe, malformed, past ``limits``, or whose
    SHA-256 is not ``checksum``; ``dest`` may then hold part of the archive, and the
    caller throws it away.
    """
    gunzip = _Gunzip(stream)
    unpacker = _Unpacker(dest.resolve(), limits)
    try:
        with tarfile.open(fileobj=gunzip, mode="r|", tarinfo=_Header) as tar:  # type: ignore[call-overload]
            for member in tar:
                unpacker.take(tar, member)
        digest = gunzip.finish()
    except SourceRefused:
        raise
    except (tarfile.TarError, EOFError, OSError, UnicodeError, ValueError, zlib.error) as exc:
        raise SourceRefused(f"not a gzipped tar Conveyor can unpack: {_reason(exc)}") from None
    if checksum is not None and digest != checksum:
        raise SourceRefused("the archive does not match its SHA-256 (corrupt in the store)")
    unpacker.finish()
    return unpacker.entries


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


class _Unpacker:
    """One archive's members, written under ``root`` by the rules of the module."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root, self.limits = root, limits
        self.entries = 0
        self.bytes = 0
        self.links: list[tuple[str, Path]] = []
        self.dirs: list[tuple[Path, int]] = []

    def take(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise SourceRefused(f"more than {self.limits.max_files} entries")
        # Counted before anything is read: a declared size past the budget stops here,
        # whether the member would be written or skipped.
        self.bytes += max(member.size, 0)
        if self.bytes > self.limits.max_bytes:
            raise SourceRefused(f"it unpacks to more than {self.limits.max_bytes} bytes")
        parts = _parts(member.name)
        if not parts or parts[0] == RESERVED:
            return  # the root itself, or the workspace's own directory
        name = "/".join(parts)
        target = self._parent(parts, name) / parts[-1]
        if member.isdir():
            self._dir(target, name, member.mode)
        elif member.isreg():
            self._file(tar, member, target, name)
        elif member.issym():
            self._link(member.linkname, target, name)
        elif member.islnk():
            raise SourceRefused(f"{name!r} is a hard link (not taken)")
        else:
            raise SourceRefused(f"{name!r} is a device, pipe or other special file")

    def _parent(self, parts: tuple[str, ...], name: str) -> Path:
        """The directory ``name`` goes in: made when missing, never reached through a link."""
        here = self.root
        for part in parts[:-1]:
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except FileNotFoundError:
                os.mkdir(here, 0o700)
                self.dirs.append((here, 0o755))
                continue
            if stat.S_ISLNK(mode):
                raise SourceRefused(f"{name!r} would be written through the link {part!r}")
            if not stat.S_ISDIR(mode):
                raise SourceRefused(f"{name!r} is inside {part!r}, which is not a directory")
        return here

    def _dir(self, target: Path, name: str, mode: int) -> None:
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise SourceRefused(f"{name!r} is in the archive twice") from None
        self.dirs.append((target, mode & 0o777))

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, name: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(target, flags, 0o600)
        except FileExistsError:
            raise SourceRefused(f"{name!r} is in the archive twice") from None
        source = tar.extractfile(member)
        written = 0
        with os.fdopen(handle, "wb") as out:
            if source is not None:
                while piece := source.read(CHUNK):
                    written += len(piece)
                    out.write(piece)
        if written != member.size:
            raise SourceRefused(f"{name!r} is cut short")
        os.chmod(target, member.mode & 0o777)
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(target, (member.mtime, member.mtime))

    def _link(self, linkname: str, target: Path, name: str) -> None:
        if not linkname or "\x00" in linkname or linkname.startswith("/"):
            raise SourceRefused(f"the link {name!r} points outside the workspace ({linkname!r})")
        try:
            os.symlink(linkname, target)
        except FileExistsError:
            raise SourceRefused(f"{name!r} is in the archive twice") from None
        self.links.append((name, target))

    def finish(self) -> None:
        """Check every link (now that all exist) and give directories their modes."""
        for name, link in self.links:
            if not _inside(self.root, os.path.realpath(link)):
                target = os.readlink(link)
                raise SourceRefused(f"the link {name!r} points outside the workspace ({target!r})")
        for directory, mode in reversed(self.dirs):  # deepest last made, first changed
            os.chmod(directory, mode | 0o700)  # the owner keeps access: steps write there


def _parts(name: str) -> tuple[str, ...]:
    """The parts of a member's name; SourceRefused for one that could leave the root."""
    if "\x00" in name or name.startswith("/"):
        raise SourceRefused(f"{name!r} is an absolute path")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise SourceRefused(f"{name!r} leads out of the workspace (..)")
    return parts


# -- the workspace hook -----------------------------------------------------------------


class WorkspaceSeeder:
    """Puts a run's source into its workspace on this host before a step opens it.

    The executor calls ``ensure`` before every sandbox a step of a run with a source
    (``ExecutionPlan.workspace_source``) opens; it does anything only when the workspace
    does not exist here yet (the run's first step on this host). The archive is then
    fetched from the artifact store, checked against the SHA-256 the run recorded,
    unpacked beside the workspace and renamed into place, so a step never sees half of
    it (two steps starting at once on one host: the first rename wins, the other's copy
    is dropped). Runs without a source never reach the store here.
    """

    def __init__(self, settings: Settings, artifacts: Callable[[], ArtifactStore] | None) -> None:
        self.settings = settings
        self._artifacts = artifacts
        self.limits = Limits.of(settings)

    def ensure(self, run_id: str, checksum: str) -> None:
        """Unpack the run's source into its workspace if this host has none yet.

        StepFailed, in one line, when the archive is missing, unreadable or refused.
        """
        base = self.settings.workspace_root
        workspace = base / run_id
        if os.path.lexists(workspace):
            return
        if "/" in run_id or run_id.startswith(".") or not run_id:
            raise StepFailed(f"run id {run_id!r} cannot name a workspace directory")
        try:
            _, stream = self._store().open_source(run_id)
        except ArtifactNotFound:
            raise StepFailed(
                "the run's source archive is not in this worker's artifact store (the API "
                "and the workers need the same one: S3, or a shared volume)"
            ) from None
        except ConveyorError as exc:
            raise StepFailed(f"the run's source could not be fetched: {exc.message}") from None
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=base, prefix=f".{run_id}.source-"))
        try:
            # As a workspace made by mkdir: a container's user reads it too.
            os.chmod(staging, 0o755)  # noqa: S103
            with stream:
                unpack_source(stream, staging, self.limits, checksum)
            _into_place(staging, workspace)
        except SourceRefused as exc:
            raise StepFailed(f"the run's source archive is refused: {exc.message}") from None
        except OSError as exc:
            raise StepFailed(f"the run's source could not be unpacked: {exc}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, onerror=_writable_and_retry)

    def _store(self) -> RunSources:
        if self._artifacts is None:
            raise StepFailed("the run has a source archive, and no artifact store is set up here")
        store = self._artifacts()
        if not isinstance(store, RunSources):
            raise StepFailed("the run has a source archive; this artifact store cannot hold one")
        return store


def _into_place(staging: Path, workspace: Path) -> None:
    try:
        os.rename(staging, workspace)
    except OSError:
        if not workspace.is_dir():
            raise
        # Another step of the run on this host put it in place first: its copy stands.


def _writable_and_retry(func: Callable[..., Any], path: str, _exc: Any) -> None:
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
    with contextlib.suppress(FileNotFoundError):
        func(path)


# -- storing (the API) --------------------------------------------------------------------


def new_run_id() -> str:
    """An id for a run whose source is stored before the run is created."""
    return str(uuid.uuid4())


def store_source(artifacts: ArtifactStore, run_id: str, archive: Path) -> str:
    """Store ``archive`` as the source of the run ``run_id`` (not created yet); its SHA-256,
    which the run records (``ExecutionPlan.workspace_source``)."""
    if not isinstance(artifacts, RunSources):
        raise SourceRefused("this API's artifact store cannot keep source archives")
    return artifacts.put_source(run_id, archive).checksum


def drop_source(artifacts: ArtifactStore, run_id: str) -> None:
    """Remove a stored source whose run was not created after all."""
    if isinstance(artifacts, RunSources):
        with contextlib.suppress(ConveyorError):
            artifacts.delete_source(run_id)


def is_gzip(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a gzip stream."""
    return head[:2] == b"\x1f\x8b"
