"""Many small files stored as one object: the packs a publish writes and a host reads.

A workspace may hold thousands of small files; storing each as an object of its own
costs a file (or a request) apiece in the store. When a publish has at least
``PACK_MIN`` contents smaller than ``PACKED_MAX`` to upload, it cuts them (in path
order) into packs of about ``PACK_BYTES`` (:func:`batches`) and stores each as one
object named by its SHA-256 (:func:`write_pack`, ``WorkspaceBlobs.put_pack``), noting
where each content landed: the manifest keeps that (``Manifest.packed``), so the
manifest is the packs' index. Fewer contents (a step that changed a few files) travel
as blobs of their own.

Each content is read from the workspace by the caller's ``read`` (which opens it without
following links) and hashed as it is put in the pack: a file that changed since the
snapshot fails the publish rather than storing bytes that do not match their digest.

On the other side, :func:`ranges` groups the contents a host lacks into few reads
(neighbours in a pack in one read, never more than ``PACK_BYTES`` at once), and
:func:`unpack` checks each content against its digest before the caller writes it: a
pack that is missing or cut short, or that holds at a place something else than the
manifest says, fails the step in one line (``WorkspaceRefused``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from conveyor.orchestrator.contracts.artifacts import WorkspaceBlobs
from conveyor.orchestrator.errors import ArtifactNotFound, ConveyorError, WorkspaceRefused

from .manifest import Place

#: Contents smaller than this travel in packs (when there are enough of them).
PACKED_MAX = 1024 * 1024
#: A publish packs its small contents only when it has at least this many to upload.
PACK_MIN = 16
#: About this many bytes per pack (one read or request on the other side).
PACK_BYTES = 8 * 1024 * 1024
#: Neighbouring contents of a pack at most this far apart are read in one go.
GAP = 256 * 1024


@dataclass(frozen=True)
class Content:
    """One content to pack: its digest and size, and the path it is read from."""

    digest: str
    size: int
    path: str


def batches(contents: list[Content]) -> list[list[Content]]:
    """``contents`` (in order) cut into packs of about ``PACK_BYTES``."""
    found: list[list[Content]] = []
    filled = PACK_BYTES
    for content in contents:
        if filled + content.size > PACK_BYTES and (not found or found[-1]):
            found.append([])
            filled = 0
        found[-1].append(content)
        filled += content.size
    return found


def write_pack(
    store: WorkspaceBlobs,
    run_id: str,
    batch: list[Content],
    read: Callable[[Content], bytes],
) -> dict[str, Place]:
    """Store ``batch`` as one pack; where each digest landed (pack, offset)."""
    data = bytearray()
    offsets: list[tuple[str, int]] = []
    for content in batch:
        piece = read(content)
        if len(piece) != content.size or hashlib.sha256(piece).hexdigest() != content.digest:
            raise WorkspaceRefused(f"{content.path!r} changed while it was being published")
        offsets.append((content.digest, len(data)))
        data += piece
    name = _stored(lambda: store.put_pack(run_id, bytes(data)))
    return {digest: (name, offset) for digest, offset in offsets}


def _stored(call: Callable[[], str]) -> str:
    try:
        return call()
    except ConveyorError as exc:
        raise WorkspaceRefused(f"the workspace could not be stored: {exc.message}") from None


@dataclass(frozen=True)
class Member:
    """A content inside a range: its digest, size, offset in the pack, and a path of it."""

    digest: str
    size: int
    offset: int
    path: str


@dataclass
class Range:
    """Contents of one pack read together: ``length`` bytes from ``start``."""

    pack: str
    start: int
    length: int = 0
    members: list[Member] = field(default_factory=list)


def ranges(wanted: Iterable[tuple[Member, str]]) -> list[Range]:
    """Group ``(member, pack)`` pairs into ranges: neighbours together, bounded in size."""
    found: list[Range] = []
    for member, name in sorted(wanted, key=lambda m: (m[1], m[0].offset)):
        last = found[-1] if found else None
        end = member.offset + member.size
        if (
            last is None
            or last.pack != name
            or member.offset - (last.start + last.length) > GAP
            or end - last.start > PACK_BYTES
            or member.offset < last.start + last.length  # overlaps: only a forged one does
        ):
            last = Range(name, member.offset)
            found.append(last)
        last.length = end - last.start
        last.members.append(member)
    return found


def unpack(store: WorkspaceBlobs, run_id: str, where: Range) -> Iterator[tuple[Member, memoryview]]:
    """Each member of ``where`` with its content, checked against its digest."""
    first = where.members[0]
    try:
        data = store.read_pack(run_id, where.pack, where.start, where.length)
    except ArtifactNotFound:
        raise WorkspaceRefused(
            f"blob {first.digest} of {first.path!r} is missing from the artifact store "
            f"(pack {where.pack})"
        ) from None
    except ConveyorError as exc:
        raise WorkspaceRefused(
            f"blob {first.digest} of {first.path!r} could not be read: {exc}"
        ) from None
    view = memoryview(data)
    for member in where.members:
        at = member.offset - where.start
        piece = view[at : at + member.size]
        if len(piece) != member.size:
            raise WorkspaceRefused(
                f"blob {member.digest} of {member.path!r} is missing from the artifact store "
                f"(pack {where.pack} ends before it)"
            )
        if hashlib.sha256(piece).hexdigest() != member.digest:
            raise WorkspaceRefused(
                f"blob {member.digest} of {member.path!r} does not match its digest "
                f"(pack {where.pack})"
            )
        yield member, piece
