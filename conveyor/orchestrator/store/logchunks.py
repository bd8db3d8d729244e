"""How a step's log is kept: blocks of lines packed into chunks, and a cap per attempt.

A step that prints 200 MB must not become millions of rows, nor fill the database: the
lines of one attempt are packed into chunks of up to ``CHUNK_BYTES`` (one row each), and
once an attempt has kept ``max_bytes`` of log, what follows is dropped. One marker
line, where the dropped lines would be, says how many bytes and lines went.

Lines arrive, and are kept, as parts: ``(stream, text)`` where ``text`` is one or more
lines joined by ``"\\n"``. A step printing a million lines hands over a few hundred
blocks, and nothing here makes a Python object per line: blocks are cut into chunks at
newlines (``str.rfind``), counted with ``str.count`` and weighed by their UTF-8 length.

Pure code, shared by ``SqlStore`` and its in-memory twin so both keep exactly the same.

A line's id is its chunk's id shifted left by ``LINE_BITS``, plus its place in the
chunk: ids grow in the order lines were written, so ``after=<id>`` still reads what came
next, and a reader finds a line's chunk without reading any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from conveyor.orchestrator.settings import Settings

#: Log kept per step attempt unless the store is told otherwise (``CONVEYOR_LOG_MAX_BYTES``).
DEFAULT_MAX_BYTES: int = Settings.model_fields["log_max_bytes"].default
#: Characters of text in one chunk, each line's newline included (a single longer line
#: gets a chunk of its own). Every line takes at least its newline, so a chunk holds at
#: most ``1 << LINE_BITS`` lines and their places fit their bits.
CHUNK_BYTES = 64 * 1024
#: A line's id is ``chunk_id << LINE_BITS | place``.
LINE_BITS = 16
#: The stream of the line that says what was dropped.
MARKER_STREAM = "system"

#: (stream, text): one or more lines of one stream, joined by newlines.
Part = tuple[str, str]


def line_bytes(text: str) -> int:
    """What a part weighs against the cap: its UTF-8 bytes and each line's newline."""
    if text.isascii():  # a flag on the string: its length is its bytes
        return len(text) + 1
    return len(text.encode("utf-8", "surrogatepass")) + 1


def line_count(text: str) -> int:
    """The lines of one part."""
    return text.count("\n") + 1


def line_id(chunk_id: int, place: int) -> int:
    """The id of the line at ``place`` in chunk ``chunk_id``."""
    return (chunk_id << LINE_BITS) | place


def chunk_of(line: int) -> tuple[int, int]:
    """(chunk id, place) of a line id."""
    return line >> LINE_BITS, line & ((1 << LINE_BITS) - 1)


def marker_text(dropped_bytes: int, dropped_lines: int, kept_bytes: int) -> str:
    """The one line that stands for the lines a cap dropped."""
    return (
        f"[conveyor] log cut: {dropped_lines} lines ({dropped_bytes} bytes) dropped after "
        f"the first {kept_bytes} bytes of this attempt (CONVEYOR_LOG_MAX_BYTES)"
    )


@dataclass(frozen=True)
class Kept:
    """Where an attempt's log stands: read from its last chunk before appending."""

    #: Lines the attempt printed so far, kept or not: the last line's number.
    lines: int = 0
    #: Bytes of log kept (the cap counts these).
    kept_bytes: int = 0
    #: Bytes dropped so far; None while nothing was (then there is no marker either).
    dropped_bytes: int | None = None

    @property
    def cut(self) -> bool:
        """True once the cap was reached and lines were dropped."""
        return self.dropped_bytes is not None


@dataclass(frozen=True)
class Chunk:
    """Up to CHUNK_BYTES of an attempt's lines, or (``dropped_bytes`` set) its marker."""

    first_line: int
    last_line: int
    #: Bytes of the lines in this chunk.
    bytes: int
    #: Bytes kept by the attempt up to and including this chunk.
    total_bytes: int
    #: The chunk's lines, as parts.
    parts: tuple[Part, ...]
    dropped_bytes: int | None = None

    @property
    def state(self) -> Kept:
        """The attempt's state right after this chunk."""
        return Kept(self.last_line, self.total_bytes, self.dropped_bytes)

    def texts(self) -> list[tuple[str, str]]:
        """(stream, text) of every line this chunk stands for (a marker: one line)."""
        if self.dropped_bytes is not None:
            return [self._marker()]
        return [(stream, line) for stream, text in self.parts for line in text.split("\n")]

    def last_texts(self, count: int) -> list[tuple[str, str]]:
        """(stream, text) of the chunk's last ``count`` lines, splitting no more than that."""
        if self.dropped_bytes is not None:
            return [self._marker()][-count:] if count > 0 else []
        found: list[tuple[str, str]] = []
        for stream, text in reversed(self.parts):
            if len(found) >= count:
                break
            lines = text.rsplit("\n", count - len(found))[-(count - len(found)) :]
            found[:0] = [(stream, line) for line in lines]
        return found

    def _marker(self) -> tuple[str, str]:
        dropped = self.last_line - self.first_line + 1
        return MARKER_STREAM, marker_text(self.dropped_bytes or 0, dropped, self.total_bytes)


@dataclass(frozen=True)
class Appended:
    """What one append writes: new chunks, and the marker's new counts if it grew."""

    chunks: list[Chunk]
    #: The existing marker, with more dropped (update it in place), or None.
    marker: Chunk | None


def pack(before: Kept, parts: Sequence[Part], max_bytes: int) -> Appended:
    """Chunks for ``parts`` appended after ``before``, keeping at most ``max_bytes``.

    A line that does not fit whole is dropped, and so is everything after it: the log
    keeps its head, and a marker line (a chunk of its own, written once and then
    updated) counts what went.
    """
    if before.cut:
        return Appended([], _dropped(before, parts))
    packer = _Packer(before, max_bytes)
    for index, (stream, text) in enumerate(parts):
        left = packer.add(stream, text)
        if left is not None:
            packer.close()
            cut_at = Kept(packer.number, packer.total, 0)
            marker = _dropped(cut_at, [*left, *parts[index + 1 :]])
            return Appended([*packer.chunks, replace(marker, first_line=cut_at.lines + 1)], None)
    packer.close()
    return Appended(packer.chunks, None)


class _Packer:
    """Fills chunks part by part, cutting a part at a newline where a chunk is full."""

    def __init__(self, before: Kept, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: Lines and bytes of the attempt in the chunks closed so far.
        self.number, self.total = before.lines, before.kept_bytes
        self.chunks: list[Chunk] = []
        #: The current chunk: (stream, pieces) per run of one stream, joined on closing.
        self._parts: list[tuple[str, list[str]]] = []
        self._chars = self._lines = self._size = 0

    def add(self, stream: str, text: str) -> list[Part] | None:
        """Pack one part; once the cap is reached, what is left of it (else None)."""
        start = 0
        while True:
            stop = self._fit(text, start)
            left = self._put(stream, text[start:stop])
            if left is not None:
                rest = [(stream, text[stop + 1 :])] if stop < len(text) else []
                return [(stream, left), *rest]
            if stop >= len(text):
                return None
            start = stop + 1

    def _fit(self, text: str, start: int) -> int:
        """Where the lines of ``text`` from ``start`` that fit the current chunk end
        (closing it when none does). Positions, not slices: a big block is not copied
        once per chunk it fills."""
        while True:
            room = CHUNK_BYTES - self._chars
            if len(text) - start + 1 <= room:
                return len(text)
            cut = text.rfind("\n", start, start + room)
            if cut >= 0:
                return cut
            if self._parts:
                self.close()
                continue
            cut = text.find("\n", start)  # one line longer than a chunk: a chunk of its own
            return len(text) if cut < 0 else cut

    def _put(self, stream: str, piece: str) -> str | None:
        """Add whole lines to the chunk; the lines left over when the cap is reached."""
        weight = line_bytes(piece)
        left = None
        if self.total + self._size + weight > self.max_bytes:
            data = piece.encode("utf-8", "surrogatepass")
            end = data.rfind(b"\n", 0, self.max_bytes - self.total - self._size)
            if end < 0:
                return piece
            piece = data[:end].decode("utf-8", "surrogatepass")
            left = data[end + 1 :].decode("utf-8", "surrogatepass")
            weight = end + 1
        if self._parts and self._parts[-1][0] == stream:  # one part per run of a stream
            self._parts[-1][1].append(piece)
        else:
            self._parts.append((stream, [piece]))
        self._chars += len(piece) + 1
        self._lines += line_count(piece)
        self._size += weight
        return left

    def close(self) -> None:
        """Close the current chunk (when it holds anything)."""
        if not self._parts:
            return
        total = self.total + self._size
        parts = tuple((stream, "\n".join(pieces)) for stream, pieces in self._parts)
        chunk = Chunk(self.number + 1, self.number + self._lines, self._size, total, parts)
        self.chunks.append(chunk)
        self.number, self.total = chunk.last_line, total
        self._parts = []
        self._chars = self._lines = self._size = 0


def _dropped(before: Kept, parts: Sequence[Part]) -> Chunk:
    """The marker after dropping ``parts`` too (its first line is set by the caller)."""
    dropped = sum(line_bytes(text) for _, text in parts)
    return Chunk(
        first_line=0,
        last_line=before.lines + sum(line_count(text) for _, text in parts),
        bytes=0,
        total_bytes=before.kept_bytes,
        parts=(),
        dropped_bytes=(before.dropped_bytes or 0) + dropped,
    )


# -- how a chunk's lines are stored -----------------------------------------------------


def encode(parts: Sequence[Part]) -> str:
    """A chunk's parts as stored: a header, then the texts as they are.

    ``R[[stream, characters], ...]`` on the first line, then the parts' texts one after
    the other: nothing is escaped, so storing costs a copy. Text that the database
    could refuse (a NUL, a lone surrogate from a binary blurt) goes as ASCII-only JSON
    instead, ``{"b": [[stream, text], ...]}``.
    """
    if all(_plain(text) for _, text in parts):
        header = json.dumps([[stream, len(text)] for stream, text in parts], separators=(",", ":"))
        return "".join(["R", header, "\n", *(text for _, text in parts)])
    return json.dumps({"b": list(parts)}, separators=(",", ":"))


def _plain(text: str) -> bool:
    """True when ``text`` can be stored as it is."""
    if "\x00" in text:
        return False
    if text.isascii():  # a flag on the string: no scan
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode(stored: str) -> list[Part]:
    """The parts of ``encode``'s text, or of the older JSON form of a line per item."""
    parts: list[Part] = []
    if stored.startswith("R"):
        newline = stored.index("\n")
        at = newline + 1
        for stream, size in json.loads(stored[1:newline]):
            parts.append((stream, stored[at : at + size]))
            at += size
        return parts
    data: Any = json.loads(stored)
    if isinstance(data, dict):
        return [(stream, text) for stream, text in data["b"]]
    # Before blocks: a line is its text, or [stream, text] where the stream changes. A
    # newline inside one of those lines was part of it: it must not make a line more.
    stream = ""
    for item in data:
        if isinstance(item, str):
            text = item
        else:
            stream, text = item
        parts.append((stream, text.replace("\n", " ")))
    return parts
