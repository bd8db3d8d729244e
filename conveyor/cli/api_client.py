"""The CLI's side of the HTTP API: requests with the bearer token, answers as records.

``RemoteRun`` reads a run over the API the way ``progress.follow`` reads one from the
store, so ``conveyor watch`` shows a remote run exactly as ``conveyor run`` shows a
local one.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from conveyor.orchestrator.errors import (
    Conflict,
    ConveyorError,
    NotFound,
    Problem,
    SpecError,
    StoreUnavailable,
    Unreachable,
)
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store import EventRecord, LogRecord, RunRecord, StepRecord

PREFIX = "/api/v1"
#: How an answer's status comes back as an error here.
_ERRORS: dict[int, type[ConveyorError]] = {404: NotFound, 409: Conflict, 503: StoreUnavailable}


class ApiClient:
    """JSON over HTTP to a Conveyor API, with ``Authorization: Bearer <token>``."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 30.0) -> None:
        # The API's own path is added here: an address pasted with it is the same API.
        self.base_url = base_url.rstrip("/").removesuffix(PREFIX).rstrip("/")
        # A token read from a file often ends in a newline; within it, none can be sent.
        self.token = token.strip() if token else token
        if self.token and not (self.token.isascii() and self.token.isprintable()):
            raise ConveyorError(
                "CONVEYOR_TOKEN is not a token: it holds a line break or a character no token has"
            )
        self.timeout = timeout

    def get(self, path: str, **query: Any) -> Any:
        """GET ``path`` (under /api/v1) with the query parameters that are not None."""
        given = {k: v for k, v in query.items() if v is not None}
        suffix = f"?{urllib.parse.urlencode(given)}" if given else ""
        return self.request("GET", path + suffix)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request and return its JSON answer (None when it has no body)."""
        data = json.dumps(body).encode() if body is not None else None
        return self._send(method, path, data, self._headers(headers))

    def _send(self, method: str, path: str, data: Any, headers: Mapping[str, str]) -> Any:
        """One exchange with the API: its JSON answer, or one clear error for whatever
        else comes back (or does not)."""
        try:
            request = urllib.request.Request(  # noqa: S310  (the URL is the user's API)
                self.base_url + PREFIX + path, data=data, method=method, headers=dict(headers)
            )
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            where = f"{self.base_url} (CONVEYOR_API_URL)"
            raise Unreachable(f"cannot reach the Conveyor API at {where}: {reason}") from None
        except (ValueError, http.client.InvalidURL) as exc:  # a host or port that is none
            raise self._not_a_url(exc) from None
        except http.client.HTTPException as exc:  # no HTTP there, or an answer cut short
            raise self._garbled(exc) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ConveyorError(
                f"the answer from {self.base_url} is not the Conveyor API's (not JSON): "
                "is CONVEYOR_API_URL the API's address?"
            ) from None

    def upload(
        self,
        path: str,
        body: Mapping[str, Any],
        files: Mapping[str, Path],
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST ``body`` as the ``run`` part of a multipart/form-data request, and each
        file (streamed from disk, never read whole) in a part of its name; the JSON answer.
        """
        with Multipart(body, files) as form:
            sent = {
                **self._headers(headers),
                "Content-Type": form.content_type,
                "Content-Length": str(form.length),
            }
            return self._send("POST", path, form, sent)

    def download(self, path: str, dest: Path) -> Mapping[str, str]:
        """GET ``path`` (under /api/v1) into the file ``dest``, streamed; the answer's headers.

        Written beside ``dest`` first and moved into place once whole, so an answer cut
        short never leaves a partial file under the name asked for.
        """
        partial = dest.with_name(f".{dest.name}.part")
        try:
            request = urllib.request.Request(  # noqa: S310  (the URL is the user's API)
                self.base_url + PREFIX + path, method="GET", headers=self._headers(None)
            )
            with (
                urllib.request.urlopen(request, timeout=self.timeout) as answer,  # noqa: S310
                partial.open("wb") as out,
            ):
                shutil.copyfileobj(answer, out, 1024 * 1024)
                headers = dict(answer.headers.items())
        except urllib.error.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename:  # the local file, not the API
                raise ConveyorError(f"cannot write {dest}: {exc.strerror or exc}") from None
            reason = getattr(exc, "reason", exc)
            where = f"{self.base_url} (CONVEYOR_API_URL)"
            raise Unreachable(f"cannot reach the Conveyor API at {where}: {reason}") from None
        except (ValueError, http.client.InvalidURL) as exc:  # a host or port that is none
            partial.unlink(missing_ok=True)
            raise self._not_a_url(exc) from None
        except http.client.HTTPException as exc:  # no HTTP there, or an answer cut short
            partial.unlink(missing_ok=True)
            raise self._garbled(exc) from None
        partial.replace(dest)
        return headers

    def _not_a_url(self, exc: Exception) -> ConveyorError:
        return ConveyorError(f"CONVEYOR_API_URL {self.base_url!r} is not a URL: {exc}")

    def _garbled(self, exc: Exception) -> ConveyorError:
        where = f"{self.base_url} (CONVEYOR_API_URL)"
        what = type(exc).__name__
        return Unreachable(f"no whole HTTP answer from the Conveyor API at {where}: {what}")

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {**headers, **(extra or {})}


class Multipart:
    """A multipart/form-data body read as a stream: the JSON part, then each file's."""

    def __init__(self, body: Mapping[str, Any], files: Mapping[str, Path]) -> None:
        self.boundary = f"conveyor-{uuid.uuid4().hex}"
        self._pieces: list[bytes | Path] = [
            self._head("run", None, "application/json"),
            json.dumps(body).encode(),
        ]
        for name, path in files.items():
            self._pieces += [b"\r\n", self._head(name, path.name, "application/gzip"), path]
        self._pieces.append(f"\r\n--{self.boundary}--\r\n".encode())
        self.length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self._pieces)
        self._open: BinaryIO | None = None
        self._index = 0

    @property
    def content_type(self) -> str:
        """The Content-Type header, with the boundary."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, name: str, filename: str | None, media: str) -> bytes:
        file = f'; filename="{filename}"' if filename else ""
        return (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"{file}\r\n'
            f"Content-Type: {media}\r\n\r\n"
        ).encode()

    def read(self, size: int = -1) -> bytes:
        """The next bytes of the body (at most ``size`` of a file; b"" at its end)."""
        size = size if size > 0 else 1024 * 1024
        while self._index < len(self._pieces):
            piece = self._pieces[self._index]
            if isinstance(piece, bytes):
                self._index += 1
                return piece
            if self._open is None:
                self._open = piece.open("rb")
            data = self._open.read(size)
            if data:
                return data
            self._open.close()
            self._open = None
            self._index += 1
        return b""

    def __enter__(self) -> Multipart:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open is not None:
            self._open.close()


def _error(exc: urllib.error.HTTPError) -> ConveyorError:
    """The API's ``{error, detail}`` answer as the matching Conveyor error."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    if not isinstance(body, dict):  # a proxy's answer, not the API's ``{error, detail}``
        body = {}
    detail = body.get("detail") or f"the API answered {exc.code} {exc.reason}"
    if problems := body.get("problems"):
        return SpecError([Problem(x["path"], x["message"], x.get("line")) for x in problems])
    if exc.code == 401:
        return ConveyorError(f"{detail} (set CONVEYOR_TOKEN)")
    return _ERRORS.get(exc.code, ConveyorError)(detail)


def quote(part: str) -> str:
    """A path segment, escaped (a step's key may hold ``[``, ``=``, ``/``)."""
    return urllib.parse.quote(part, safe="")


# -- answers as records ------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _at(value: str) -> datetime:
    moment = _when(value)
    assert moment is not None
    return moment


def run_record(data: Mapping[str, Any]) -> RunRecord:
    """A run as the API sent it."""
    return RunRecord(
        id=data["id"],
        definition_id=data["definition_id"],
        pipeline=data["pipeline"],
        status=RunStatus(data["status"]),
        params=data["params"],
        submitted_by=data["submitted_by"],
        error=data["error"],
        event_seq=data["event_seq"],
        deadline=_when(data["deadline"]),
        created_at=_at(data["created_at"]),
        updated_at=_at(data["updated_at"]),
        completed_at=_when(data["completed_at"]),
    )


def step_record(run_id: str, data: Mapping[str, Any]) -> StepRecord:
    """A step as the API sent it (it never sends lease details)."""
    return StepRecord(
        id=f"{run_id}:{data['key']}",
        run_id=run_id,
        key=data["key"],
        position=data["position"],
        type=data["type"],
        status=StepStatus(data["status"]),
        attempts=data["attempts"],
        queue=data["queue"],
        last_error=data["last_error"],
        exit_code=data["exit_code"],
        outputs=data["outputs"],
        lease_owner=None,
        lease_expires_at=None,
        available_at=None,
        started_at=_when(data["started_at"]),
        completed_at=_when(data["completed_at"]),
    )


def event_record(run_id: str, data: Mapping[str, Any]) -> EventRecord:
    """An event as the API sent it."""
    return EventRecord(
        seq=data["seq"],
        run_id=run_id,
        step_key=data["step_key"],
        type=data["type"],
        payload=data["payload"],
        created_at=_at(data["created_at"]),
    )


def log_record(step_key: str, data: Mapping[str, Any]) -> LogRecord:
    """A log line as the API sent it."""
    return LogRecord(
        id=data["id"],
        step_key=step_key,
        attempt=data["attempt"],
        stream=data["stream"],
        text=data["text"],
        created_at=_at(data["created_at"]),
    )


class RemoteRun:
    """One run read over the API, shaped like the store for ``progress.follow``.

    While the API is briefly away (a 503 while its database restarts, a dropped
    connection) the last answer stands and the next poll tries again, for up to
    ``patience`` seconds in a row.
    """

    def __init__(self, client: ApiClient, run_id: str, patience: float = 120.0) -> None:
        self.client = client
        self.run_id = run_id
        self.patience = patience
        self.run: RunRecord | None = None
        self._steps: list[StepRecord] = []
        self._failing_since: float | None = None

    def refresh(self) -> RunRecord:
        """The run and its steps, read now."""
        data = self.client.get(f"/runs/{quote(self.run_id)}")
        self.run_id = data["id"]  # the full id, if a prefix was given
        self.run = run_record(data)
        self._steps = [step_record(self.run_id, s) for s in data["steps"]]
        return self.run

    def wait(self, seconds: float) -> RunRecord:
        """Wait ``seconds``, then read the run (or keep the last one while the API is away)."""
        time.sleep(seconds)
        try:
            run = self.refresh()
        except StoreUnavailable:
            if self.run is None or not self._still_patient():
                raise
            return self.run
        self._failing_since = None
        return run

    def _still_patient(self) -> bool:
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        return now - self._failing_since <= self.patience

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The steps as of the last read."""
        return list(self._steps)

    def list_events(self, run_id: str, after: int = 0) -> list[EventRecord]:
        """Events after ``after`` (none while the API is away)."""
        try:
            data = self.client.get(f"/runs/{quote(run_id)}/events", after=after)
        except StoreUnavailable:
            return []
        return [event_record(run_id, e) for e in data["items"]]

    def tail_logs(
        self, run_id: str, step_key: str, lines: int = 3, attempt: int | None = None
    ) -> list[LogRecord]:
        """The last lines of a step's log (none while the API is away)."""
        path = f"/runs/{quote(run_id)}/steps/{quote(step_key)}/logs"
        try:
            data = self.client.get(path, tail=lines, attempt=attempt)
        except StoreUnavailable:
            return []
        return [log_record(step_key, line) for line in data["items"]]
