"""How a step's log is kept: lines packed into chunks, and a cap per attempt.

A step that prints 200 MB must not become millions of rows, nor fill the database: the
lines of one attempt are packed into chunks of up to ``CHUNK_BYTES`` (one row each), and
once an attempt has kept ``max_bytes`` of log, what follows is dropped. One marker
line, where the dropped lines would be, says how many bytes and lines went.

Pure code, shared by ``SqlStore`` and its in-memory twin so both keep exactly the same.

A line's id is its chunk's id shifted left by ``LINE_BITS``, plus its place in the
chunk: ids grow in the order lines were written, so ``after=<id>`` still reads what came
next, and a reader finds a line's chunk without reading any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from conveyor.orchestrator.settings import Settings

#: Log kept per step attempt unless the store is told otherwise (``CONVEYOR_LOG_MAX_BYTES``).
DEFAULT_MAX_BYTES: int = Settings.model_fields["log_max_bytes"].default
#: Bytes of text in one chunk (a single longer line gets a chunk of its own).
CHUNK_BYTES = 64 * 1024
#: Lines in one chunk; with LINE_BITS, bounds the place of a line in its chunk.
CHUNK_LINES = 4096
#: A line's id is ``chunk_id << LINE_BITS | place``.
LINE_BITS = 16
#: The stream of the line that says what was dropped.
MARKER_STREAM = "system"


def line_bytes(text: str) -> int:
    """What one line weighs against the cap: its UTF-8 bytes and its newline."""
    return len(text.encode("utf-8", "surrogatepass")) + 1


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
    lines: tuple[tuple[str, str], ...]
    dropped_bytes: int | None = None

    @property
    def state(self) -> Kept:
        """The attempt's state right after this chunk."""
        return Kept(self.last_line, self.total_bytes, self.dropped_bytes)

    def texts(self) -> list[tuple[str, str]]:
        """(stream, text) of every line this chunk stands for (a marker: one line)."""
        if self.dropped_bytes is None:
            return list(self.lines)
        dropped = self.last_line - self.first_line + 1
        return [(MARKER_STREAM, marker_text(self.dropped_bytes, dropped, self.total_bytes))]


@dataclass(frozen=True)
class Appended:
    """What one append writes: new chunks, and the marker's new counts if it grew."""

    chunks: list[Chunk]
    #: The existing marker, with more dropped (update it in place), or None.
    marker: Chunk | None


def pack(before: Kept, lines: Sequence[tuple[str, str]], max_bytes: int) -> Appended:
    """Chunks for ``lines`` appended after ``before``, keeping at most ``max_bytes``.

    A line that does not fit whole is dropped, and so is everything after it: the log
    keeps its head, and a marker line (a chunk of its own, written once and then
    updated) counts what went.
    """
    if before.cut:
        grown = _dropped(before, lines)
        return Appended([], grown)
    chunks: list[Chunk] = []
    number, total = before.lines, before.kept_bytes
    current: list[tuple[str, str]] = []
    size = 0
    for index, (stream, text) in enumerate(lines):
        weight = line_bytes(text)
        if total + weight > max_bytes:
            if current:
                chunks.append(_chunk(number, current, size, total))
            cut_at = Kept(number + len(current), total, 0)
            marker = _dropped(cut_at, lines[index:])
            return Appended([*chunks, replace(marker, first_line=cut_at.lines + 1)], None)
        if current and (size + weight > CHUNK_BYTES or len(current) >= CHUNK_LINES):
            chunks.append(_chunk(number, current, size, total))
            number += len(current)
            current, size = [], 0
        current.append((stream, text))
        size += weight
        total += weight
    if current:
        chunks.append(_chunk(number, current, size, total))
    return Appended(chunks, None)


def _chunk(before: int, lines: list[tuple[str, str]], size: int, total: int) -> Chunk:
    return Chunk(before + 1, before + len(lines), size, total, tuple(lines))


def _dropped(before: Kept, lines: Sequence[tuple[str, str]]) -> Chunk:
    """The marker after dropping ``lines`` too (its first line is set by the caller)."""
    dropped = sum(line_bytes(text) for _, text in lines)
    return Chunk(
        first_line=0,
        last_line=before.lines + len(lines),
        bytes=0,
        total_bytes=before.kept_bytes,
        lines=(),
        dropped_bytes=(before.dropped_bytes or 0) + dropped,
    )


# -- how a chunk's lines are stored -----------------------------------------------------


def encode(lines: Iterable[tuple[str, str]]) -> str:
    """A chunk's lines as JSON: a line is its text, or [stream, text] where the stream changes.

    ASCII-only JSON: a lone surrogate from a binary blurt is stored as its escape
    instead of refusing the whole chunk.
    """
    packed: list[Any] = []
    stream = None
    for s, text in lines:
        packed.append(text if s == stream else [s, text])
        stream = s
    return json.dumps(packed, separators=(",", ":"))


def decode(stored: str) -> Iterator[tuple[str, str]]:
    """(stream, text) of each line of ``encode``'s JSON."""
    stream = ""
    for item in json.loads(stored):
        if isinstance(item, str):
            yield stream, item
        else:
            stream, text = item
            yield stream, text
