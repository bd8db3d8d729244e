"""Routes as data: each one's path, role, models and handler; views are made from them.

The route table (``routes.py``) is the one place that lists what the API serves. The
Flask views and the OpenAPI document are both built from it, so they cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from flask import Response, request
from pydantic import BaseModel, ValidationError
from werkzeug.datastructures import Headers

from conveyor.orchestrator.errors import BadRequest, Forbidden, Unauthorized, UnstorableValue
from conveyor.orchestrator.pipeline import format_path
from conveyor.orchestrator.store import Role, Token
from conveyor.orchestrator.values import check, check_text, scalar_problem

from .services import Services
from .uploads import Uploads

B = TypeVar("B")
Q = TypeVar("Q")
Handler = Callable[..., Any]
_PARAM = re.compile(r"\{(\w+)\}")
#: Characters a path parameter, query parameter or read header may have.
MAX_PARAMETER = 4096


@dataclass(frozen=True)
class Call(Generic[B, Q]):
    """One request as a handler sees it: parsed, validated and authenticated."""

    services: Services
    token: Token | None
    body: B
    query: Q
    headers: Headers
    #: Files sent with the body (``Route.uploads``), as temporary files: name -> path.
    uploads: Mapping[str, Path] = field(default_factory=dict)

    @property
    def who(self) -> str | None:
        """The name of the token that made the request."""
        return self.token.name if self.token else None


@dataclass(frozen=True)
class Reply:
    """A model answered with a status other than the route's, or with headers."""

    model: BaseModel
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """One operation of the API."""

    method: str
    path: str  # OpenAPI form, under /api/v1: /runs/{run_id}
    handler: Handler
    summary: str
    tag: str
    role: Role | None = Role.VIEWER  # None: no token needed
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    #: Other statuses answered with ``response`` (e.g. 200 for a replayed submission).
    also: tuple[int, ...] = ()
    #: Media types answered besides JSON, with their OpenAPI schema.
    media: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Request headers the operation reads: name -> description.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Path parameters that may contain ``/`` (a matrix step's key can).
    slashed: tuple[str, ...] = ()
    #: Files the body may bring (name -> description): the body may then come as
    #: multipart/form-data, the JSON in its ``run`` part and each file in its own.
    uploads: Mapping[str, str] = field(default_factory=dict)
    operation_id: str = ""
    description: str = ""

    @property
    def endpoint(self) -> str:
        """The Flask endpoint and the OpenAPI operationId."""
        return self.operation_id or self.handler.__name__

    @property
    def flask_path(self) -> str:
        """The path in Werkzeug's rule syntax."""

        def rule(match: re.Match[str]) -> str:
            name = match.group(1)
            return f"<path:{name}>" if name in self.slashed else f"<{name}>"

        return _PARAM.sub(rule, self.path)

    @property
    def path_params(self) -> list[str]:
        """Names of the path's parameters, in order."""
        return _PARAM.findall(self.path)


def make_view(route: Route, services: Services) -> Callable[..., Response]:
    """The Flask view of a route: authenticate, parse, call the handler, answer."""

    def view(**path: str) -> Response:
        token = authorize(services, route.role)
        for name, value in path.items():
            check_text(value, name, max_length=MAX_PARAMETER)
        for name in route.headers:
            if (header := request.headers.get(name)) is not None:
                check_text(header, f"{name} header", max_length=MAX_PARAMETER)
        depth = services.settings.max_json_depth
        with Uploads() as uploads:
            body: BaseModel | None
            if route.body and route.uploads and request.mimetype == "multipart/form-data":
                body = uploads.parse(route.body, route.uploads, services.settings, parse_json)
            else:
                body = parse_body(route.body, depth) if route.body else None
            query = parse_query(route.query) if route.query else None
            call: Call[Any, Any] = Call(
                services, token, body, query, request.headers, uploads.files
            )
            return respond(route, route.handler(call, **path))

    view.__name__ = route.endpoint
    return view


def authorize(services: Services, needed: Role | None) -> Token | None:
    """The request's token, if its role is ``needed`` or above (401/403 otherwise)."""
    if needed is None:
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized()
    token = services.tokens.authenticate(secret.strip())
    if token is None:
        raise Unauthorized("the bearer token is unknown or revoked")
    if not token.role.allows(needed):
        raise Forbidden(f"this needs an {needed.value} token; this one is a {token.role.value}")
    return token


def parse_body(model: type[BaseModel], depth: int) -> BaseModel:
    """The JSON body as ``model``: 400 when it is not JSON, does not fit, or holds a value
    that could not be stored (nesting past ``depth``, NUL, NaN, integers past 64 bits).
    """
    # The raw body, whatever its Content-Type: `curl -d` sends JSON as a form unless told
    # otherwise. Too large a body is a 413 (MAX_CONTENT_LENGTH) from here.
    return parse_json(model, request.get_data(cache=True), depth)


def parse_json(model: type[BaseModel], raw: bytes, depth: int) -> BaseModel:
    """``raw`` as ``model`` (see ``parse_body``)."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except RecursionError:
        raise UnstorableValue(f"the request body nests more than {depth} levels deep") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer of thousands of digits
        reason = (str(exc).splitlines() or [""])[0]
        message = f"the request body must be a JSON object; it is not JSON: {reason}"
        raise BadRequest(message) from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    check(data, "", depth=depth)
    return parse(model, data)


def parse_query(model: type[BaseModel]) -> BaseModel:
    """The query string as ``model``; a 400 naming a parameter that cannot be compared."""
    for name, value in request.args.items(multi=True):
        check_text(name, "a query parameter's name", max_length=MAX_PARAMETER)
        check_text(value, name, max_length=MAX_PARAMETER)
    query = parse(model, dict(request.args.items()))
    for name, value in query:
        if isinstance(value, int | float) and (why := scalar_problem(value)):
            raise UnstorableValue(f"{name}: {why}")
    return query


def parse(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    """``data`` as ``model``; a 400 naming every field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest("; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    where = format_path(error["loc"])
    return f"{where}: {message}" if where else message


def respond(route: Route, result: BaseModel | Reply | Response) -> Response:
    """The handler's result as a response (models as JSON, with the route's status)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, Reply):
        model, status, headers = result.model, result.status, dict(result.headers)
    else:
        model, status, headers = result, route.status, {}
    return Response(model.model_dump_json(), status, headers, mimetype="application/json")
