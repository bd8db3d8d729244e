"""Tar handling for the Docker sandbox: pack a host path, unpack a container's archive.

What comes out of a container is untrusted: extraction refuses absolute paths, ``..``,
links that point outside the target, device files and pipes, and stops at a size cap,
before a single file is written.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from conveyor.orchestrator.errors import SandboxError

#: What one copy_out may bring onto the host, archived or unpacked.
MAX_COPY_BYTES = 4 * 1024**3


def pack(src: Path, name: str, out: BinaryIO) -> None:
    """Write a tar of the host file or directory ``src`` to ``out``, its root named ``name``."""
    if not src.exists():
        raise SandboxError(f"{src} does not exist")
    try:
        with tarfile.open(fileobj=out, mode="w") as tar:
            tar.add(src, arcname=name)
    except OSError as exc:
        raise SandboxError(f"could not pack {src.name}: {exc}") from exc


def spool(chunks: Iterable[bytes], out: BinaryIO, limit: int = MAX_COPY_BYTES) -> None:
    """Write a stream of archive chunks to ``out``; stop once it passes ``limit`` bytes."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise SandboxError(f"the copy is larger than the {limit} byte limit")
        out.write(chunk)


def unpack(archive: Path, dest: Path, limit: int = MAX_COPY_BYTES) -> None:
    """Extract the one root entry of ``archive`` to ``dest`` (a file or a directory)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".conveyor-copy-", dir=dest.parent))
    try:
        root = _extract(archive, staging, limit)
        _place(staging / root, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: Path, target: Path, limit: int) -> str:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member)
            total = sum(m.size for m in members if m.isfile())
            if total > limit:
                raise SandboxError(f"the copy unpacks to {total} bytes; the limit is {limit}")
            if not members:
                raise SandboxError("the copy is empty")
            tar.extractall(target, members=members, filter="data")
            return members[0].name.split("/")[0]
    except (tarfile.TarError, OSError) as exc:
        raise SandboxError(f"cannot unpack the copy: {exc}") from None


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse, with a clear reason, a member that could reach outside the target."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise SandboxError(f"cannot unpack the copy: {name!r} points outside its folder")
    if member.isdev() or member.isfifo():
        raise SandboxError(f"cannot unpack the copy: {name!r} is a device or pipe")
    if member.issym() or member.islnk():
        link = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise SandboxError(f"cannot unpack the copy: {name!r} links outside its folder")


def _place(extracted: Path, dest: Path) -> None:
    if extracted.is_dir() and not extracted.is_symlink():
        shutil.copytree(extracted, dest, symlinks=True, dirs_exist_ok=True)
        return
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    extracted.replace(dest)
