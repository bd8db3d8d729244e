"""What an artifact is, and the rules its keys follow whatever store keeps it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from .errors import ConveyorError

#: Keys are paths of plain names: `reports/junit.xml`, `ui-dist`, `app-1.2.tar`.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")
MAX_KEY = 512
CHUNK = 1024 * 1024


class ArtifactError(ConveyorError):
    """The artifact could not be stored or read."""

    http_status = 422


class ArtifactNotFound(ArtifactError):
    """No such artifact."""

    http_status = 404


class ChecksumMismatch(ArtifactError):
    """The artifact's content does not match its checksum."""

    http_status = 500


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


def chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """Read a stream in pieces: artifacts are never read whole into memory."""
    while piece := stream.read(size):
        yield piece


def new_hash() -> hashlib._Hash:
    """The checksum every store uses."""
    return hashlib.sha256()
