"""The OpenAPI 3.1 document, built from the route table and the pydantic models.

Pydantic writes JSON Schema 2020-12, which is OpenAPI 3.1's schema language, so the
models' schemas go into ``components.schemas`` as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from conveyor import __version__

from .models import ErrorBody
from .routing import Route
from .uploads import BODY_PART

PREFIX = "/api/v1"
REF = "#/components/schemas/{model}"
#: Errors any operation can answer.
COMMON_ERRORS = (500, 503)
AUTH_ERRORS = (401, 403)


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The whole OpenAPI document of ``routes``."""
    refs, schemas = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        item = paths.setdefault(PREFIX + route.path, {})
        item[route.method.lower()] = _operation(route, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor API",
            "version": __version__,
            "description": "Run CI/CD pipelines on Conveyor's workers. Every operation but "
            "health, readiness and this document needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "tags": [{"name": tag} for tag in dict.fromkeys(r.tag for r in routes)],
    }


Key = tuple[type[Any], JsonSchemaMode]


def _schemas(routes: Sequence[Route]) -> tuple[dict[Key, Any], dict[str, Any]]:
    """A ``$ref`` per (model, mode) and every schema they use, by name."""
    wanted: dict[Key, None] = {(ErrorBody, "serialization"): None}
    for route in routes:
        for model, mode in _models_of(route):
            wanted[(model, mode)] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF)
    return dict(refs), dict(top.get("$defs", {}))


def _models_of(route: Route) -> Iterable[tuple[type[BaseModel], JsonSchemaMode]]:
    if route.body:
        yield route.body, "validation"
    if route.query:
        yield route.query, "validation"
    if route.response:
        yield route.response, "serialization"


def _operation(route: Route, refs: dict[Key, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.endpoint,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route, refs, schemas),
        "responses": _responses(route, refs),
        "security": [{"bearer": []}] if route.role else [],
    }
    description = route.description or (route.handler.__doc__ or "").strip()
    if route.role:
        description += f"\n\nNeeds a token with role `{route.role.value}` or above."
    operation["description"] = description.strip()
    if route.body:
        body = refs[(route.body, "validation")]
        content = {"application/json": {"schema": body}}
        if route.uploads:
            content["multipart/form-data"] = _multipart(body, route.uploads)
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _multipart(body: dict[str, Any], uploads: Mapping[str, str]) -> dict[str, Any]:
    """The body as multipart/form-data: the JSON in its part, each file in its own."""
    files = {
        name: {"type": "string", "format": "binary", "description": text}
        for name, text in uploads.items()
    }
    return {
        "schema": {
            "type": "object",
            "properties": {BODY_PART: body, **files},
            "required": [BODY_PART],
            "additionalProperties": False,
        },
        "encoding": {
            BODY_PART: {"contentType": "application/json"},
            **{name: {"contentType": "application/gzip"} for name in uploads},
        },
    }


def _parameters(route: Route, refs: dict[Key, Any], schemas: dict[str, Any]) -> list[Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    params += [
        {"name": name, "in": "header", "required": False, "description": text}
        | {"schema": {"type": "string"}}
        for name, text in route.headers.items()
    ]
    if route.query:
        params += _query_parameters(_resolve(refs[(route.query, "validation")], schemas))
    return params


def _resolve(ref: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[-1]
    schema: dict[str, Any] = schemas[name]
    return schema


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        out.append(param)
    return out


def _responses(route: Route, refs: dict[Key, Any]) -> dict[str, Any]:
    responses = {str(route.status): _success(route, refs, route.status)}
    for status in route.also:
        responses[str(status)] = _success(route, refs, status)
    auth = AUTH_ERRORS if route.role else ()
    error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    for status in sorted({*route.errors, *auth, *_input_errors(route), *COMMON_ERRORS}):
        responses.setdefault(str(status), _described(status, error))
    return responses


def _input_errors(route: Route) -> tuple[int, ...]:
    """400 for any operation that reads input (a value that cannot be stored or compared
    is refused, wherever it is); 413 for a body past the size limit."""
    reads = route.path_params or route.query or route.body or route.headers
    return (400,) + ((413,) if route.body else ()) if reads else ()


def _success(route: Route, refs: dict[Key, Any], status: int) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if route.response:
        content["application/json"] = {"schema": refs[(route.response, "serialization")]}
    content.update({media: {"schema": dict(schema)} for media, schema in route.media.items()})
    return _described(status, content)


def _described(status: int, content: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if content:
        response["content"] = content
    return response
