"""Property-based fuzzing of every operation of the OpenAPI document (schemathesis).

For each operation, requests generated from the document itself, valid ones and
invalid ones, go to the real API on a real store. No answer may be a 5xx, and every
answer must fit the document: a status it lists, its media type, its schema, its
headers. Bounded and derandomised: the same requests on every run, a few minutes at
most on SQLite and Postgres together.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.api.openapi import document
from conveyor.api.routes import ROUTES
from conveyor.orchestrator.store.sql import SqlStore
from tests.security.api_kit import ONE_STEP, PIPELINES, RUNS, Headers

#: Requests per operation and mode: enough to reach every parameter's edge cases.
EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
#: Every operation with valid requests; those that take a body or a query with invalid
#: ones too (any string is a valid path parameter or header, so nothing else can be).
OPERATIONS = [
    pytest.param(route.method, route.path, mode, id=f"{route.method} {route.path} {mode.value}")
    for route in ROUTES
    for mode in ((POSITIVE, NEGATIVE) if route.body or route.query else (POSITIVE,))
]


def _seeded(api: Flask, admin: Headers) -> str:
    """A registered pipeline and a run, so lists and reads answer with items: the run's id."""
    client = api.test_client()
    assert client.post(PIPELINES, json={"definition": ONE_STEP}, headers=admin).status_code == 201
    run = client.post(RUNS, json={"definition": ONE_STEP, "params": {"n": 1}}, headers=admin)
    assert run.status_code == 201
    run_id: str = run.json["id"]
    return run_id


#: Text made of what stores and drivers trip on: NUL, lone surrogates, LIKE wildcards.
HOSTILE_TEXT = st.text(st.sampled_from("a0-_%\\\x00\ud800\udfff\U0001f600"), max_size=6)
#: Any JSON value, hostile text included.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _cursor(data: st.DataObject) -> str:
    """A cursor as the API makes them (base64 of JSON), holding what was generated:
    a run id of hostile text or any JSON value, or nesting past the JSON reader's depth.
    """
    moment = data.draw(st.sampled_from(["2020-01-01T00:00:00+00:00", "x"]), label="moment")
    run_id = data.draw(HOSTILE_TEXT | JSON_VALUES, label="run id")
    text = data.draw(st.sampled_from([json.dumps([moment, run_id]), "[" * 3000]), label="cursor")
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _aimed(case: Any, data: st.DataObject, run_id: str) -> None:
    """Point a generated request, half the time, at what exists, so it reaches past the
    first lookup: the seeded run (or a prefix of its id), its step, the registered
    pipeline, a valid pipeline file whose message is the generated text, and a cursor
    that decodes (to whatever JSON, as a forged one would).
    """
    if not data.draw(st.booleans(), label="aimed"):
        return
    path = case.path_parameters or {}
    known = {"run_id": run_id, "name": "tiny", "step": "only", "version": "1"}
    for name in path:
        if name in known:
            value = known[name]
            if name == "run_id":
                value = value[: data.draw(st.sampled_from([4, 8, len(value)]), label="prefix")]
            path[name] = value
    if case.method == "GET" and case.operation.path.endswith("/runs"):
        case.query = {**(case.query or {}), "cursor": _cursor(data)}
    if isinstance(case.body, dict) and "definition" in case.body:
        message = data.draw(st.text(max_size=20), label="message")
        case.body["definition"] = ONE_STEP.replace("message: hi", f"message: {json.dumps(message)}")
        if case.operation.path.endswith("/runs"):
            case.body.pop("version", None)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_no_request_gets_a_5xx_or_an_answer_off_the_document(
    api: Flask,
    admin: Headers,
    db_store: SqlStore,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    run_id = _seeded(api, admin)
    schema = schemathesis.openapi.from_dict(document(ROUTES))
    operation = schema[f"/api/v1{path}"][method]
    cases = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, with_token=st.booleans(), data=st.data())
    def answers_within_the_document(case: Any, with_token: bool, data: st.DataObject) -> None:
        _aimed(case, data, run_id)
        headers = dict(case.headers or {})
        if with_token:
            headers.update(admin)
        response = case.call(app=api, headers=headers)
        case.validate_response(response, checks=CHECKS)

    answers_within_the_document()
