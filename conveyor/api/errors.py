"""Errors only the API raises, and the one handler that turns any error into JSON.

They extend the orchestrator's error tree, so the handler maps every error the same
way: ``ConveyorError.http_status`` is the status, the message is ``detail``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Response
from werkzeug.exceptions import HTTPException

from conveyor.orchestrator.errors import ConveyorError, SpecError

from .models import ErrorBody, ProblemModel

log = logging.getLogger("conveyor.api")


class BadRequest(ConveyorError):
    """The request is malformed."""

    http_status = 400


class Unauthorized(ConveyorError):
    """A valid bearer token is required: send `Authorization: Bearer <token>`."""

    http_status = 401


class Forbidden(ConveyorError):
    """This token's role may not do that."""

    http_status = 403


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
    if exc.http_status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    body = ErrorBody(error=error_code(type(exc).__name__), detail=exc.message, problems=problems)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return json_response(body, exc.http_status, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers: dict[str, Any] = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    body = ErrorBody(error=error_code(exc.name), detail=exc.description or exc.name)
    return json_response(body, status, headers)
