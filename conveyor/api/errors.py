"""The one handler that turns any error into JSON, and the HTTP status of each error.

Errors are the orchestrator's (``conveyor.orchestrator.errors``); what each one means
over HTTP is decided here, in ``STATUSES``. The message is the answer's ``detail``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Response
from werkzeug.exceptions import HTTPException

from conveyor.orchestrator.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    BadRequest,
    BrokerUnavailable,
    ChecksumMismatch,
    Conflict,
    ConveyorError,
    Forbidden,
    NotFound,
    SchemaOutdated,
    SecretRefused,
    SecretsUnavailable,
    SourceRefused,
    SpecError,
    StoreUnavailable,
    TemplateError,
    Unauthorized,
)

from .models import ErrorBody, ProblemModel

log = logging.getLogger("conveyor.api")

#: The HTTP status of each error class. A class not listed answers with its nearest
#: listed parent's (``IllegalTransition`` is a 409 as ``Conflict`` is); anything else
#: is a 500.
STATUSES: Mapping[type[ConveyorError], int] = {
    ConveyorError: 500,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    SpecError: 422,
    TemplateError: 422,
    SecretsUnavailable: 422,
    SecretRefused: 422,
    SourceRefused: 422,
    # A bad key or an oversized artifact is the client's to fix; a stored artifact that
    # no longer matches its checksum is the server's fault.
    ArtifactError: 422,
    ArtifactNotFound: 404,
    ChecksumMismatch: 500,
    ArtifactStoreUnavailable: 503,
    StoreUnavailable: 503,
    SchemaOutdated: 503,
    BrokerUnavailable: 503,
}


#: What a 503 says: which dependency is down, never where it lives. The error's own
#: message (a host, a port, the driver's words) goes to the API's log only.
UNAVAILABLE: Mapping[type[ConveyorError], str] = {
    StoreUnavailable: "the database is unavailable",
    SchemaOutdated: "the database is not at the current schema revision",
    BrokerUnavailable: "the message broker is unavailable",
    ArtifactStoreUnavailable: "the artifact store is unavailable",
}


def unavailable(error: type[ConveyorError]) -> str | None:
    """What a 503 for ``error`` tells the client (None when it is no outage)."""
    for cls in error.__mro__:
        if cls in UNAVAILABLE:
            return UNAVAILABLE[cls]
    return None


def status_for(error: type[ConveyorError]) -> int:
    """The HTTP status of ``error``: its own in ``STATUSES``, else its nearest parent's."""
    for cls in error.__mro__:
        if cls in STATUSES:
            return STATUSES[cls]
    return 500


def error_code(name: str) -> str:
    """``NotFound`` / ``Not Found`` -> ``not_found``: the error's stable machine name."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return "_".join(spaced.lower().split())


def json_response(body: ErrorBody, status: int, headers: dict[str, str] | None = None) -> Response:
    """An error as the API always answers one."""
    payload = body.model_dump_json(exclude_none=True)
    return Response(payload, status=status, mimetype="application/json", headers=headers)


def handle_error(exc: Exception) -> Response:
    """The one error handler: Conveyor errors, HTTP errors and the unexpected, as JSON."""
    if isinstance(exc, ConveyorError):
        return _conveyor_error(exc)
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    # Never a traceback in a response: the server's log has it.
    log.exception("unexpected error")
    body = ErrorBody(error="internal_error", detail="internal server error (see the API's log)")
    return json_response(body, 500)


def _conveyor_error(exc: ConveyorError) -> Response:
    problems = None
    if isinstance(exc, SpecError):
        problems = [ProblemModel(path=p.path, message=p.message, line=p.line) for p in exc.problems]
    status = status_for(type(exc))
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    detail = exc.message
    if status == 503:
        detail = unavailable(type(exc)) or "a service this API needs is unavailable"
    body = ErrorBody(error=error_code(type(exc).__name__), detail=detail, problems=problems)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return json_response(body, status, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    kept = ("allow", "content-range")  # a 405 lists the methods, a 416 the length
    headers: dict[str, Any] = {k: v for k, v in exc.get_headers() if k.lower() in kept}
    body = ErrorBody(error=error_code(exc.name), detail=exc.description or exc.name)
    return json_response(body, status, headers)
