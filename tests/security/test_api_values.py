"""Values that cannot be stored or compared: a 4xx naming where they are, nothing stored.

Too deep, NUL characters, lone surrogates, NaN, Infinity, 1e999, integers past 64 bits:
in a JSON body, a query or path parameter, a header, or a pipeline file (registered or
inline). Before, each was a 500, and some were stored first and broke every later read.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient

from conveyor.orchestrator.errors import UnstorableValue
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from tests.security.api_kit import ONE_STEP, PIPELINES, RUNS, Headers, json_of, raw_post


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _nothing_stored(client: FlaskClient, admin: Headers) -> None:
    listed = client.get(RUNS, headers=admin)
    assert listed.status_code == 200 and json_of(listed)["items"] == []
    pipelines = client.get(PIPELINES, headers=admin)
    assert pipelines.status_code == 200 and json_of(pipelines)["items"] == []


@pytest.mark.parametrize("depth", [33, 500, 100_000])
def test_deeply_nested_params_are_refused_naming_them_and_nothing_is_stored(
    client: FlaskClient, admin: Headers, depth: int
) -> None:
    body = f'{{"definition": {json.dumps(ONE_STEP)}, "params": {_nested(depth)}}}'

    answer = raw_post(client, RUNS, body, admin)

    assert answer.status_code == 400, answer.data[:300]
    error = json_of(answer)
    assert error["error"] in ("unstorable_value", "bad_request")
    assert "nests more than 32 levels" in error["detail"]
    if depth < 1000:  # the parser itself stops the deepest before any path exists
        assert error["detail"].startswith("params.a.a")
    _nothing_stored(client, admin)


def test_params_nested_to_the_limit_are_stored_and_listed(
    client: FlaskClient, admin: Headers
) -> None:
    body = f'{{"definition": {json.dumps(ONE_STEP)}, "params": {_nested(31)}}}'

    answer = raw_post(client, RUNS, body, admin)

    assert answer.status_code == 201, answer.data[:300]
    assert client.get(RUNS, headers=admin).status_code == 200


@pytest.mark.parametrize(
    ("value", "field", "why"),
    [
        ('"a\\u0000b"', "params.x", "NUL"),
        ('"\\ud800"', "params.x", "lone surrogate (U+D800)"),
        ('"\\udfff tail"', "params.x", "lone surrogate (U+DFFF)"),
        ("NaN", "params.x", "NaN is not a finite number"),
        ("Infinity", "params.x", "Infinity is not a finite number"),
        ("-Infinity", "params.x", "-Infinity is not a finite number"),
        ("1e999", "params.x", "Infinity is not a finite number"),
        ("[1, 2, 9223372036854775808]", "params.x[2]", "out of range"),
        ("-9223372036854775809", "params.x", "out of range"),
        ('{"k\\u0000": 1}', "params.x", "NUL"),
    ],
)
def test_unstorable_values_in_params_are_400_naming_them_and_nothing_is_stored(
    client: FlaskClient, admin: Headers, value: str, field: str, why: str
) -> None:
    body = f'{{"definition": {json.dumps(ONE_STEP)}, "params": {{"x": {value}}}}}'

    answer = raw_post(client, RUNS, body, admin)

    assert answer.status_code == 400, answer.data[:300]
    error = json_of(answer)
    assert error["error"] == "unstorable_value"
    assert error["detail"].startswith(field) and why in error["detail"]
    _nothing_stored(client, admin)


def test_the_largest_64_bit_integers_are_stored(client: FlaskClient, admin: Headers) -> None:
    body = f'{{"definition": {json.dumps(ONE_STEP)}, "params": {{"x": [{2**63 - 1}, {-(2**63)}]}}}}'

    answer = raw_post(client, RUNS, body, admin)

    assert answer.status_code == 201, answer.data[:300]
    assert json_of(answer)["params"] == {"x": [2**63 - 1, -(2**63)]}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"secrets": {"token": "a\x00b"}}, "secrets.token"),
        ({"pipeline": "tiny\x00", "definition": None}, "pipeline"),
        ({"pipeline": "tiny", "definition": None, "version": 2**64}, "version"),
        ({"pipeline": "tiny", "definition": None, "version": 2**40}, "version"),
    ],
)
def test_other_body_fields_that_cannot_be_stored_are_4xx_naming_them(
    client: FlaskClient, admin: Headers, fields: dict[str, object], named: str
) -> None:
    body = {"definition": ONE_STEP, **fields}
    body = {k: v for k, v in body.items() if v is not None}

    answer = client.post(RUNS, json=body, headers=admin)

    assert answer.status_code == 400, answer.data[:300]
    assert json_of(answer)["detail"].startswith(named)
    _nothing_stored(client, admin)


def test_params_past_the_size_limit_are_refused(
    client: FlaskClient, admin: Headers, settings: Settings
) -> None:
    big = "x" * settings.max_params_bytes

    answer = client.post(RUNS, json={"definition": ONE_STEP, "params": {"x": big}}, headers=admin)

    assert answer.status_code == 400
    assert json_of(answer)["detail"].startswith("params: ")
    _nothing_stored(client, admin)


def test_a_token_name_with_a_nul_is_refused(client: FlaskClient, admin: Headers) -> None:
    answer = client.post(
        "/api/v1/tokens", json={"name": "bot\x00", "role": "viewer"}, headers=admin
    )

    assert answer.status_code == 400 and json_of(answer)["detail"].startswith("name: ")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"{RUNS}?pipeline=a%00b", "pipeline"),
        (f"{RUNS}?status=running&cursor=%00", "cursor"),
        (f"{RUNS}/abcd%00", "run_id"),
        (f"{RUNS}/abcd/steps/a%00/logs", "step"),
        (f"{RUNS}/abcd/events?after={2**63}", "after"),
        (f"{RUNS}/abcd/events?after={2**31}", "after"),
        (f"{PIPELINES}/tiny%00", "name"),
    ],
)
def test_unstorable_query_and_path_parameters_are_4xx_naming_them(
    client: FlaskClient, admin: Headers, url: str, named: str
) -> None:
    answer = client.get(url, headers=admin)

    assert 400 <= answer.status_code < 500, answer.data[:300]
    assert named in json_of(answer)["detail"]


def test_a_pipeline_version_past_any_column_is_404_naming_it(
    client: FlaskClient, admin: Headers
) -> None:
    answer = client.get(f"{PIPELINES}/tiny/versions/{2**64}", headers=admin)

    assert answer.status_code == 404 and str(2**64) in json_of(answer)["detail"]


def test_an_idempotency_key_with_a_nul_is_400_and_makes_no_run(
    client: FlaskClient, admin: Headers
) -> None:
    headers = {**admin, "Idempotency-Key": "key\x00"}

    answer = client.post(RUNS, json={"definition": ONE_STEP}, headers=headers)

    assert answer.status_code == 400
    assert json_of(answer)["detail"].startswith("Idempotency-Key header: ")
    _nothing_stored(client, admin)


YAML_VALUES = [
    ('"hi\\0"', "NUL"),
    ('"hi\\x00"', "NUL"),
    ('"hi\\u0000"', "NUL"),
    (".nan", "NaN is not a finite number"),
    (".inf", "Infinity is not a finite number"),
    ("-.inf", "-Infinity is not a finite number"),
    ("99999999999999999999", "out of range"),
]


@pytest.mark.parametrize(("value", "why"), YAML_VALUES)
@pytest.mark.parametrize("where", [PIPELINES, RUNS])
def test_a_pipeline_file_with_an_unstorable_value_is_422_naming_path_and_line(
    client: FlaskClient, admin: Headers, value: str, why: str, where: str
) -> None:
    definition = ONE_STEP.replace("message: hi", f"message: {value}")

    answer = client.post(where, json={"definition": definition}, headers=admin)

    assert answer.status_code == 422, answer.data[:300]
    error = json_of(answer)
    assert error["error"] == "spec_error"
    assert "pipelines.tiny.steps[0].config.message" in error["detail"] and why in error["detail"]
    assert error["problems"][0]["line"] == 4
    _nothing_stored(client, admin)


def test_a_registered_pipeline_with_a_nul_cannot_break_later_runs(
    client: FlaskClient, admin: Headers
) -> None:
    bad = ONE_STEP.replace("message: hi", 'message: "hi\\0"')

    registered = client.post(PIPELINES, json={"definition": bad}, headers=admin)
    started = client.post(RUNS, json={"pipeline": "tiny"}, headers=admin)

    assert registered.status_code == 422
    assert started.status_code == 404  # nothing was registered to run
    _nothing_stored(client, admin)


def test_a_key_with_a_nul_in_a_pipeline_file_is_refused(
    client: FlaskClient, admin: Headers
) -> None:
    definition = ONE_STEP.replace("config: {message: hi}", 'config: {"mes\\0sage": hi}')

    answer = client.post(RUNS, json={"definition": definition}, headers=admin)

    assert answer.status_code == 422 and "NUL" in json_of(answer)["detail"]


# -- the store's own guard: no path past the API stores what cannot be read --------------


@pytest.mark.parametrize(
    "params",
    [
        {"x": "a\x00b"},
        {"x": float("nan")},
        {"x": 2**64},
        {"x": "\udc80"},
        json.loads(_nested(300)),
    ],
    ids=["nul", "nan", "int", "surrogate", "deep"],
)
def test_the_store_refuses_what_it_could_not_read_back(
    client: FlaskClient, admin: Headers, db_store: SqlStore, params: dict[str, object]
) -> None:
    from conveyor.api.services import Services

    services: Services = client.application.extensions["conveyor"]
    plan = services.compiler.compile(ONE_STEP).select(None)

    with pytest.raises(UnstorableValue):
        services.runtime.submit(plan, ONE_STEP, params)

    assert db_store.list_runs() == []
    assert client.get(RUNS, headers=admin).status_code == 200


def _cursor(created_at: str, run_id: object) -> str:
    raw = json.dumps([created_at, run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "run_id", ["\udc80", "a\x00b", "x" * 5000], ids=["surrogate", "nul", "long"]
)
def test_a_forged_cursor_holding_an_unstorable_run_id_is_400(
    client: FlaskClient, admin: Headers, run_id: str
) -> None:
    """The cursor is decoded by the API itself: what it holds is checked like any input."""
    cursor = _cursor("2020-01-01T00:00:00+00:00", run_id)

    answer = client.get(f"{RUNS}?cursor={cursor}", headers=admin)

    assert answer.status_code == 400, answer.data[:300]
    assert "cursor" in json_of(answer)["detail"]


def test_a_forged_cursor_nested_past_the_json_reader_is_400(
    client: FlaskClient, admin: Headers
) -> None:
    cursor = base64.urlsafe_b64encode(b"[" * 3000).decode()

    answer = client.get(f"{RUNS}?cursor={cursor}", headers=admin)

    assert answer.status_code == 400, answer.data[:300]
    assert "cursor" in json_of(answer)["detail"]


def test_the_store_refuses_a_lone_surrogate_in_any_parameter_it_binds(
    db_store: SqlStore,
) -> None:
    """Drivers raise UnicodeEncodeError themselves, outside the DBAPI's errors."""
    moment = datetime(2020, 1, 1, tzinfo=UTC)

    with pytest.raises(UnstorableValue):
        db_store.list_runs(limit=1, after=(moment, "\udc80"))
    with pytest.raises(UnstorableValue):
        db_store.list_runs(limit=1, pipeline="a\udc80")
