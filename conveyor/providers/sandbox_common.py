"""What the local and the Docker sandbox share: output lines, limits, paths, sizes."""

from __future__ import annotations

import re
import threading
import time
from collections import deque

from conveyor.orchestrator.contracts import LineSink, SandboxRequest
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepTimeout

#: The workspace path container steps use; the local sandbox maps it onto the host.
CONTAINER_WORKSPACE = "/workspace"
MAX_LINE_BYTES = 64 * 1024
TAIL_LINES = 20
POLL = 0.05

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MEMORY = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SAME_DEADLINE = 1.0  # seconds: deadlines this close are taken to be the same limit
_MIN_MEMORY = 6 * 1024**2  # Docker's floor too: below it not even the shell starts


class LineSplitter:
    """Cuts a byte stream into text lines for a sink, keeping the last few as a tail."""

    def __init__(self, sink: LineSink | None) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._sink = sink
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Add bytes; emit every complete line (and every 64 KiB of an endless one)."""
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if end >= 0:
                self._emit(self._buffer[:end])
                del self._buffer[: end + 1]
            elif len(self._buffer) > MAX_LINE_BYTES:
                cut = _utf8_boundary(self._buffer, MAX_LINE_BYTES)
                self._emit(self._buffer[:cut])
                del self._buffer[:cut]
            else:
                return

    def flush(self) -> None:
        """Emit a last line that had no newline."""
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = bytearray()

    def _emit(self, raw: bytes | bytearray) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        self.tail.append(text)
        if self._sink is not None:
            self._sink(text)


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


def _utf8_boundary(buffer: bytearray, limit: int) -> int:
    """``limit``, moved back so that a split does not cut a UTF-8 character in two."""
    cut = limit
    while cut > limit - 3 and buffer[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut
