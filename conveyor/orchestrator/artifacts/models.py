"""What an artifact is, and the rules its keys follow whatever store keeps it."""

from __future__ import annotations

import ctypes
import hashlib
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, BinaryIO

from conveyor.orchestrator.errors import ArtifactError

#: Keys are paths of plain names: `reports/junit.xml`, `ui-dist`, `app-1.2.tar`.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
MAX_KEY = 512
CHUNK = 1024 * 1024
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Artifact:
    """A stored file: its key, size in bytes, SHA-256 and when it was stored."""

    key: str
    size: int
    checksum: str
    created_at: datetime
    #: ``file``, or ``dir`` for a directory stored as a tar (pulls unpack it again).
    kind: str = "file"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path; refuse `..`, absolute paths and NUL."""
    if not key or len(key) > MAX_KEY or "\x00" in key:
        raise ArtifactError(f"artifact key {key!r} is empty, too long or holds a NUL byte")
    if key.startswith("/") or "\\" in key:
        raise ArtifactError(f"artifact key {key!r} must be a relative path with / separators")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _PART.fullmatch(part):
            raise ArtifactError(
                f"artifact key {key!r}: each part is a plain name (letters, digits, . _ - + = @)"
            )
    return key


def validate_run_id(run_id: str) -> str:
    """Run ids name directories and prefixes: only plain names."""
    if not _PART.fullmatch(run_id):
        raise ArtifactError(f"run id {run_id!r} cannot name an artifact folder")
    return run_id


def validate_digest(digest: str) -> str:
    """A SHA-256 in lowercase hex, as a stored workspace blob, pack or manifest is named."""
    if len(digest) != 64 or not _HEX.issuperset(digest):
        raise ArtifactError(f"{digest[:80]!r} is not a SHA-256 digest")
    return digest


def chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Read a stream in pieces: artifacts are never read whole into memory."""
    while piece := stream.read(size):
        yield piece


def new_hash() -> hashlib._Hash:
    """The checksum every store uses."""
    return hashlib.sha256()


class Hasher:
    """SHA-256 of the pieces fed to it, computed on a thread of its own.

    hashlib lets go of the GIL on large buffers, so the hash of one piece is computed
    while the next is read and written: a checksummed copy costs about what the hash
    alone costs, not the hash plus the copy. At most a few pieces wait in between, so
    memory stays flat whatever the size of the file.
    """

    def __init__(self, backlog: int = 4) -> None:
        self._digest = new_hash()
        self._pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._work, name="conveyor-sha256", daemon=True)
        self._thread.start()

    def update(self, piece: bytes) -> None:
        """Hash ``piece`` after those given before it."""
        self._pieces.put(piece)

    def hexdigest(self) -> str:
        """The checksum of everything given, once it has all been hashed."""
        self.close()
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the thread (safe to call twice)."""
        if self._thread.is_alive():
            self._pieces.put(None)
            self._thread.join()

    def __enter__(self) -> Hasher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _work(self) -> None:
        while (piece := self._pieces.get()) is not None:
            self._digest.update(piece)


def hash_stream(source: BinaryIO) -> tuple[str, int]:
    """The SHA-256 and size of what ``source`` holds, read in pieces."""
    digest, size = new_hash(), 0
    for piece in chunks(source):
        digest.update(piece)
        size += len(piece)
    return digest.hexdigest(), size


def copy_hashed(
    source: BinaryIO, out: BinaryIO, *, limit: int | None = None, sync: bool = False
) -> tuple[str, int]:
    """Copy ``source`` to ``out`` in pieces; return the SHA-256 and the bytes copied.

    With ``limit``, a source longer than that raises ArtifactError before more than
    ``limit`` bytes are written. With ``sync``, ``out`` (a file) is on disk on return.
    """
    size = 0
    flush = _Writeback(out) if sync else None
    with Hasher() as digest:
        for piece in chunks(source):
            size += len(piece)
            if limit is not None and size > limit:
                raise ArtifactError(f"larger than the {limit}-byte limit")
            digest.update(piece)
            out.write(piece)
            if flush is not None:
                flush.start(size)
        if flush is not None:
            flush.finish()  # while the hash of the last pieces is still being computed
        return digest.hexdigest(), size


class _Writeback:
    """Gets a file onto disk as it is written, so the fsync at the end waits for little.

    Every few MiB, Linux's ``sync_file_range`` starts writing what was written so far
    without waiting for it (what PostgreSQL does with its checkpoints): the disk works
    while the copy goes on. Elsewhere the final fsync does it all.
    """

    STEP = 16 * CHUNK

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.started = 0

    def start(self, written: int) -> None:
        """Start writing back what is new since the last call, once it is a STEP."""
        if _SYNC_FILE_RANGE is None or written - self.started < self.STEP:
            return
        self.out.flush()
        # SYNC_FILE_RANGE_WRITE (2): start the writes, wait for nothing; errors surface
        # at the fsync.
        _SYNC_FILE_RANGE(self.out.fileno(), self.started, written - self.started, 2)
        self.started = written

    def finish(self) -> None:
        """Wait until the whole file is on disk."""
        self.out.flush()
        os.fsync(self.out.fileno())


def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return call


_SYNC_FILE_RANGE = _sync_file_range()
