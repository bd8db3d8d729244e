"""What the local and the Docker sandbox share: output blocks and lines, limits, sizes."""

from __future__ import annotations

import contextlib
import fcntl
import re
import threading
import time
from collections import deque

from conveyor.orchestrator.contracts import LineSink, OutputSink, SandboxRequest
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepTimeout

#: The workspace path container steps use; the local sandbox maps it onto the host.
CONTAINER_WORKSPACE = "/workspace"
MAX_LINE_BYTES = 64 * 1024
#: Bytes asked for per read of a command's output, and the pipe size asked for: a loud
#: command's output comes in big blocks, a few hundred per million lines.
READ_BYTES = 1024 * 1024
TAIL_LINES = 20
POLL = 0.05

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MEMORY = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SAME_DEADLINE = 1.0  # seconds: deadlines this close are taken to be the same limit
_MIN_MEMORY = 6 * 1024**2  # Docker's floor too: below it not even the shell starts


class OutputSplitter:
    """Cuts a byte stream into blocks of whole text lines for a sink; keeps a short tail.

    A block is everything up to the last newline read so far, decoded at once: a
    command printing a million lines costs a few hundred calls, not a million. A line
    with no newline in sight is cut every MAX_LINE_BYTES, so memory stays bounded.
    """

    def __init__(self, sink: OutputSink | None) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._sink = sink
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Add bytes; emit every complete line (and every 64 KiB of an endless one)."""
        self._buffer += chunk
        end = self._buffer.rfind(b"\n")
        if end >= 0:
            self._emit(_cut_long_lines(self._buffer[: end + 1]))
            del self._buffer[: end + 1]
        while len(self._buffer) > MAX_LINE_BYTES:  # no newline in it: an endless line
            cut = _utf8_boundary(self._buffer, MAX_LINE_BYTES)
            self._emit(self._buffer[:cut] + b"\n")
            del self._buffer[:cut]

    def flush(self) -> None:
        """Emit a last line that had no newline."""
        if self._buffer:
            self._emit(self._buffer + b"\n")
            self._buffer = bytearray()

    def _emit(self, raw: bytes | bytearray) -> None:
        text = raw.decode("utf-8", errors="replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self.tail.extend(text[:-1].rsplit("\n", TAIL_LINES)[-TAIL_LINES:])
        if self._sink is not None:
            self._sink(text)


class LineSplitter(OutputSplitter):
    """An OutputSplitter for a sink that takes one line at a time."""

    def __init__(self, sink: LineSink | None) -> None:
        super().__init__(each_line(sink) if sink is not None else None)


def each_line(sink: LineSink) -> OutputSink:
    """An OutputSink that hands each line of a block to ``sink``."""

    def lines(block: str) -> None:
        for text in block[:-1].split("\n"):
            sink(text)

    return lines


def output_sink(on_line: LineSink | None, on_output: OutputSink | None) -> OutputSink | None:
    """Where a command's output goes: blocks to ``on_output``, else lines to ``on_line``."""
    if on_output is not None:
        return on_output
    return each_line(on_line) if on_line is not None else None


def grow_pipe(fd: int) -> None:
    """Ask for a pipe of READ_BYTES (Linux): fewer wake-ups and bigger blocks.

    The kernel may refuse (a per-user limit on pipe memory); the pipe then stays as it
    was, which only costs speed.
    """
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_BYTES)


def parse_memory(value: str | int | None) -> int | None:
    """Bytes for a Docker-style memory limit: ``512m``, ``1g``, ``1048576``."""
    if value is None:
        return None
    match = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match:
        size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        raise SandboxError(f"memory_limit {value!r} is not a size like 512m or 1g")
    if size < _MIN_MEMORY:
        raise SandboxError(f"memory_limit {value!r} is below the 6m minimum")
    return size


def effective_deadline(request: SandboxRequest) -> tuple[float | None, str]:
    """The earlier of the step's deadline and the sandbox's own timeout, and its message."""
    timeout = request.config.timeout
    if timeout is None:
        return request.deadline, "timed out: the step's time limit passed"
    own = time.monotonic() + timeout
    # The context may already have folded this same timeout into request.deadline a
    # moment ago; then the configured timeout is still what the user should read.
    if request.deadline is None or own <= request.deadline + _SAME_DEADLINE:
        return min(own, request.deadline or own), f"timed out after {format_duration(timeout)}"
    return request.deadline, "timed out: the step's time limit passed"


def limit_reached(cancel: threading.Event, deadline: float | None) -> str | None:
    # The deadline first: a runtime that cancels on timeout sets both at once.
    if deadline is not None and time.monotonic() >= deadline:
        return "timeout"
    if cancel.is_set():
        return "cancel"
    return None


def raise_for(reason: str | None, timeout_message: str) -> None:
    """Raise what a limit that fired means for the step (nothing when none did)."""
    if reason == "timeout":
        raise StepTimeout(timeout_message)
    if reason == "cancel":
        raise StepCancelled("cancelled")


def _cut_long_lines(block: bytearray) -> bytearray:
    """``block`` with every line longer than MAX_LINE_BYTES cut there (as an endless
    line is): a long line may end in the same read as it grew past the limit.

    Looks a window of MAX_LINE_BYTES + 1 bytes at a time for a newline, from its end:
    a block of short lines costs a few steps per window, not one per line.
    """
    if len(block) <= MAX_LINE_BYTES:
        return block
    pieces: list[bytes | bytearray] = []
    done = start = 0  # block[:done] is in pieces; a line starts at ``start``
    while len(block) - start > MAX_LINE_BYTES:
        newline = block.rfind(b"\n", start, start + MAX_LINE_BYTES + 1)
        if newline >= 0:
            start = newline + 1
            continue
        cut = start + _utf8_boundary(block[start : start + MAX_LINE_BYTES + 1], MAX_LINE_BYTES)
        pieces += [block[done:cut], b"\n"]
        done = start = cut
    if not pieces:
        return block
    pieces.append(block[done:])
    return bytearray(b"".join(pieces))


def _utf8_boundary(buffer: bytearray, limit: int) -> int:
    """``limit``, moved back so that a split does not cut a UTF-8 character in two."""
    cut = limit
    while cut > limit - 3 and buffer[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut
