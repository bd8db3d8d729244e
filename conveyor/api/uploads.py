"""Request bodies that bring files: multipart/form-data, the JSON body in its ``run`` part.

A route that lists ``uploads`` (``POST /runs``: ``source``) takes its body either as
JSON, as every other route does, or as multipart/form-data: the JSON in a part named
``run`` and each file in a part of its name. Files are streamed to temporary files
(never held in memory) up to ``CONVEYOR_MAX_SOURCE_BYTES``; one byte more is a 413.
The temporary files are removed when the request ends, whatever the handler did.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from flask import request
from pydantic import BaseModel
from werkzeug.exceptions import RequestEntityTooLarge

from conveyor.orchestrator.errors import BadRequest
from conveyor.orchestrator.settings import Settings

#: The part holding the JSON body.
BODY_PART = "run"
#: Room for a definition of the largest size allowed, JSON-escaped, and its params.
BODY_FACTOR = 4
#: Room for the parts' headers and boundaries.
OVERHEAD = 64 * 1024
CHUNK = 1024 * 1024

ParseJson = Callable[[type[BaseModel], bytes, int], BaseModel]


class Uploads:
    """The files of one request, removed when it ends (a context manager)."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}

    def __enter__(self) -> Uploads:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for path in self.files.values():
            with contextlib.suppress(OSError):
                path.unlink()
        self.files.clear()

    def parse(
        self,
        model: type[BaseModel],
        names: Mapping[str, str],
        settings: Settings,
        parse_json: ParseJson,
    ) -> BaseModel:
        """The multipart request's body as ``model``; its files kept in ``files``."""
        body_limit = settings.max_definition_bytes * BODY_FACTOR + OVERHEAD
        request.max_content_length = settings.max_source_bytes * len(names) + body_limit
        request.max_form_memory_size = body_limit
        request.max_form_parts = 2 + 2 * len(names)
        form, files = request.form, request.files  # 413 past the limits, 400 if malformed
        known = {BODY_PART, *names}
        unknown = sorted((set(form) | set(files)) - known)
        if unknown:
            raise BadRequest(
                f"unknown part {unknown[0]!r}: the parts are {', '.join(sorted(known))}"
            )
        for name in known:
            if len(form.getlist(name)) + len(files.getlist(name)) > 1:
                raise BadRequest(f"the part {name!r} is there more than once")
        if BODY_PART in files:
            raw = _read_bounded(files[BODY_PART].stream, body_limit, BODY_PART)
        elif BODY_PART in form:
            raw = form[BODY_PART].encode("utf-8", "surrogatepass")
        else:
            raise BadRequest(f"a multipart body needs a {BODY_PART!r} part holding the JSON body")
        body = parse_json(model, raw, settings.max_json_depth)
        for name in names:
            if name in files:
                self.files[name] = self._keep(files[name].stream, name, settings.max_source_bytes)
            elif name in form:
                self.files[name] = self._keep_bytes(form[name].encode("utf-8", "surrogatepass"))
        return body

    def _keep(self, stream: IO[bytes], name: str, limit: int) -> Path:
        """Copy ``stream`` to a temporary file, counting: past ``limit`` bytes is a 413."""
        handle, path = tempfile.mkstemp(prefix="conveyor-upload-")
        kept = Path(path)
        self.files[f".{name}"] = kept  # removed at the end even when this stops half-way
        size = 0
        with os.fdopen(handle, "wb") as out:
            while piece := stream.read(CHUNK):
                size += len(piece)
                if size > limit:
                    raise RequestEntityTooLarge(
                        f"the {name} archive is larger than {limit} bytes "
                        "(CONVEYOR_MAX_SOURCE_BYTES)"
                    )
                out.write(piece)
        del self.files[f".{name}"]
        return kept

    def _keep_bytes(self, data: bytes) -> Path:
        handle, path = tempfile.mkstemp(prefix="conveyor-upload-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        return Path(path)


def _read_bounded(stream: IO[bytes], limit: int, name: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(f"the {name!r} part is larger than {limit} bytes")
    return data
