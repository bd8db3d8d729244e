"""The engine's JSON progress streams (build, push) turned into log lines and results,
with one-line errors, and a client whose streams can be cut short on cancel or timeout.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import deque
from typing import Any

import docker
from docker.utils import kwargs_from_env

from conveyor.orchestrator.contracts import LineSink
from conveyor.orchestrator.errors import StepFailed

from ..sandbox_common import LineSplitter
from .client import quiet_environment

_STEP = re.compile(r"^Step (?P<number>\d+/\d+) : (?P<instruction>.*)$")
# Push statuses that repeat for every layer and every tick: noise in a log.
_QUIET = frozenset({"Preparing", "Waiting", "Pushing"})
_DENIED = ("denied", "unauthorized", "authentication required", "no basic auth credentials")
_UNREACHABLE = ("connection refused", "no such host", "dial tcp", "i/o timeout", "http response")
#: What a container's stdout or stderr output keeps: its last 64 KiB.
OUTPUT_CAP = 64 * 1024


class StreamingApi(docker.APIClient):  # type: ignore[misc]
    """An API client that remembers each thread's open stream, so it can be cut."""

    def __init__(self) -> None:
        super().__init__(**kwargs_from_env())
        quiet_environment(self)
        self._streams = threading.local()

    def _stream_helper(self, response: Any, decode: bool = False) -> Any:
        self._streams.response = response
        return super()._stream_helper(response, decode=decode)

    def current(self) -> Any:
        """This thread's latest streamed response (None before any)."""
        return getattr(self._streams, "response", None)

    def cut(self, response: Any) -> None:
        """End ``response`` now: the engine sees the client leave and stops the work."""
        if response is None:
            return
        with contextlib.suppress(Exception):  # closed already: nothing is left to cut
            raw = self._get_raw_response_socket(response)
            getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)


class BuildLog:
    """Follows a legacy-builder stream: log lines, the current step, the image id."""

    def __init__(self, sink: LineSink | None) -> None:
        self.image_id: str | None = None
        self.step: str | None = None
        self._sink = sink
        self._lines = LineSplitter(self._line)

    def feed(self, message: dict[str, Any]) -> None:
        """Take one message; StepFailed when it reports the build's failure."""
        if message.get("error"):
            self._lines.flush()
            raise StepFailed(self.failure(str(message["error"])))
        if "stream" in message:
            self._lines.feed(str(message["stream"]).encode("utf-8"))
        elif "status" in message:  # pulling a base image
            self._lines.feed(f"{_status(message)}\n".encode())
        aux = message.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            self.image_id = str(aux["ID"])

    def finish(self) -> None:
        """Emit a last line that had no newline."""
        self._lines.flush()

    def failure(self, error: str) -> str:
        """The build's error on one line, naming the instruction that failed."""
        error = " ".join(error.split())
        match = _STEP.match(self.step or "")
        if match is None:
            return f"build failed: {error}"
        where = f"step {match['number']} ({match['instruction']})"
        if match["instruction"].upper().startswith("FROM "):
            error = f"the base image is not on this engine and could not be pulled: {error}"
        return f"build failed at {where}: {error}"

    def _line(self, text: str) -> None:
        if _STEP.match(text):
            self.step = text
        if text.strip() and self._sink is not None:
            self._sink(text)


class PushLog:
    """Follows a push stream: status lines worth reading, and the pushed digest."""

    def __init__(self, reference: str, sink: LineSink | None) -> None:
        self.reference = reference
        self.digest: str | None = None
        self._sink = sink

    def feed(self, message: dict[str, Any]) -> None:
        """Take one message; StepFailed when it reports the push's failure."""
        if message.get("error"):
            raise StepFailed(push_failure(self.reference, str(message["error"])))
        aux = message.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest = str(aux["Digest"])
        status = message.get("status")
        if status and status not in _QUIET and self._sink is not None:
            self._sink(_status(message))


def push_failure(reference: str, error: str) -> str:
    """A push error on one line, saying whether it was refused or never arrived."""
    error = " ".join(error.split())
    registry = registry_of(reference)
    lowered = error.lower()
    if any(word in lowered for word in _DENIED):
        return f"push of {reference} was denied by {registry}: {error}"
    if any(word in lowered for word in _UNREACHABLE):
        return f"the registry {registry} is unreachable: {error}"
    return f"push of {reference} failed: {error}"


def registry_of(reference: str) -> str:
    """The registry host a reference names (Docker Hub when its first part is no host)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class Capped:
    """The last OUTPUT_CAP bytes of a stream, and whether more than that came."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.cut = False

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk``, dropping the oldest bytes past the cap."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= OUTPUT_CAP:
            self._size -= len(self._chunks.popleft())
            self.cut = True

    def text(self) -> str:
        """What was kept, as text (a character cut in two at the front is dropped)."""
        data = b"".join(self._chunks)
        if len(data) > OUTPUT_CAP:
            data, self.cut = data[-OUTPUT_CAP:], True
        start = 0
        while self.cut and start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
            start += 1  # the tail of a character whose head was dropped
        return data[start:].decode("utf-8", errors="replace")


def _status(message: dict[str, Any]) -> str:
    layer = message.get("id")
    status = str(message.get("status", ""))
    return f"{layer}: {status}" if layer else status
