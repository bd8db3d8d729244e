"""Health, readiness, metrics, step types, the OpenAPI document, and errors as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from conveyor.api.routes import ROUTES
from conveyor.api.services import Services
from conveyor.orchestrator.errors import (
    ArtifactStoreUnavailable,
    BrokerUnavailable,
    StoreUnavailable,
)
from conveyor.orchestrator.store.tokens import Tokens
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import RUNS, TWO_STEPS, Broker, body, submit, work

Headers = dict[str, str]
#: How a driver says a server is down: where it lives, which no answer may repeat.
WHERE_IT_LIVES = 'connection to server at "10.20.30.40", port 5432 failed: Connection refused'


def test_healthz_answers_without_a_token(client: FlaskClient) -> None:
    answer = client.get("/api/v1/healthz")

    assert answer.status_code == 200 and body(answer)["status"] == "ok"


def test_readyz_is_200_when_database_and_broker_answer(client: FlaskClient) -> None:
    answer = client.get("/api/v1/readyz")

    ready = body(answer)
    assert (answer.status_code, ready["status"]) == (200, "ready")
    assert ready["checks"]["database"]["ok"] and ready["checks"]["broker"]["ok"]


def test_readyz_is_503_naming_the_broker_when_it_is_down(
    client: FlaskClient, broker: Broker
) -> None:
    broker.up = False

    answer = client.get("/api/v1/readyz")

    ready = body(answer)
    assert (answer.status_code, ready["status"], ready["error"]) == (
        503,
        "unavailable",
        "not_ready",
    )
    assert ready["checks"]["database"]["ok"] and not ready["checks"]["broker"]["ok"]
    assert ready["detail"] == "broker: unavailable"
    assert b"connection refused" not in answer.data


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable(WHERE_IT_LIVES),
        ConnectionRefusedError(WHERE_IT_LIVES),  # a probe's raw error, not translated
    ],
)
def test_readyz_says_the_database_is_down_but_not_where_it_lives(
    client: FlaskClient, services: Services, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def down() -> None:
        raise error

    monkeypatch.setattr(services.store, "ensure_current", down)

    answer = client.get("/api/v1/readyz")

    assert answer.status_code == 503
    ready = body(answer)
    assert ready["detail"] == "database: unavailable"
    assert ready["checks"]["database"] == {"ok": False, "detail": "unavailable"}
    assert b"10.20.30.40" not in answer.data and b"5432" not in answer.data


@pytest.mark.parametrize(
    ("error", "code", "detail"),
    [
        (StoreUnavailable(WHERE_IT_LIVES), "store_unavailable", "the database is unavailable"),
        (
            BrokerUnavailable(f"broker unavailable: {WHERE_IT_LIVES}"),
            "broker_unavailable",
            "the message broker is unavailable",
        ),
        (
            ArtifactStoreUnavailable(f"S3 request failed: {WHERE_IT_LIVES}"),
            "artifact_store_unavailable",
            "the artifact store is unavailable",
        ),
    ],
)
def test_any_route_is_503_json_naming_the_dependency_down_but_not_where_it_lives(
    client: FlaskClient,
    viewer: Headers,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    code: str,
    detail: str,
) -> None:
    def down(*_: Any) -> None:
        raise error

    monkeypatch.setattr(Tokens, "authenticate", down)

    answer = client.get(RUNS, headers=viewer)

    assert answer.status_code == 503
    assert body(answer) == {"error": code, "detail": detail}
    assert b"10.20.30.40" not in answer.data and b"5432" not in answer.data


def test_unknown_routes_and_methods_answer_json(client: FlaskClient, viewer: Headers) -> None:
    missing = client.get("/api/v1/nothing-here", headers=viewer)
    root = client.get("/")
    wrong = client.delete(RUNS, headers=viewer)

    assert (missing.status_code, body(missing)["error"]) == (404, "not_found")
    assert (root.status_code, body(root)["error"]) == (404, "not_found")
    assert (wrong.status_code, body(wrong)["error"]) == (405, "method_not_allowed")
    assert set(wrong.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_an_unexpected_error_is_500_json_without_its_details(
    client: FlaskClient, viewer: Headers, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> None:
        raise RuntimeError("password=hunter2 in a driver message")

    monkeypatch.setattr(services.store, "list_runs", broken)

    answer = client.get(RUNS, headers=viewer)

    assert answer.status_code == 500
    assert body(answer) == {
        "error": "internal_error",
        "detail": "internal server error (see the API's log)",
    }
    assert b"hunter2" not in answer.data and b"Traceback" not in answer.data


def test_a_body_too_large_is_413_json(client: FlaskClient, operator: Headers, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]

    answer = client.post(RUNS, data=b"x" * (limit + 1), headers=operator)

    assert (answer.status_code, body(answer)["error"]) == (413, "request_entity_too_large")


def test_step_types_and_their_seed_alias_list_each_config_schema(
    client: FlaskClient, viewer: Headers
) -> None:
    types = body(client.get("/api/v1/step-types", headers=viewer))
    alias = body(client.get("/api/v1/module-schemas", headers=viewer))

    assert types == alias
    by_name = {t["name"]: t for t in types["items"]}
    shell = by_name["step.shell_exec"]
    assert shell["queue"] == "sandbox" and shell["description"]
    assert "commands" in shell["config_schema"]["properties"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_runs_steps_queues_and_step_durations_from_the_store(
    client: FlaskClient,
    viewer: Headers,
    operator: Headers,
    services: Services,
    recorder: MemoryDispatcher,
) -> None:
    submit(client, operator, TWO_STEPS)
    work(services, recorder)
    submit(client, operator, TWO_STEPS)  # its first step stays queued

    answer = client.get("/api/v1/metrics", headers=viewer)

    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    got = samples(answer.get_data(as_text=True))
    assert got["conveyor_runs", (("status", "succeeded"),)] == 1
    assert got["conveyor_runs", (("status", "running"),)] == 1
    assert got["conveyor_runs", (("status", "failed"),)] == 0
    queued = ("conveyor_steps", (("queue", "control"), ("status", "queued"), ("type", "step.log")))
    assert got[queued] == 1
    assert got["conveyor_queue_depth", (("queue", "control"), ("state", "ready"))] == 1
    assert got["conveyor_queue_depth", (("queue", "control"), ("state", "backoff"))] == 0
    assert got["conveyor_queue_depth", (("queue", "sandbox"), ("state", "ready"))] == 0
    labels = (("queue", "sandbox"), ("type", "step.shell_exec"))
    assert got["conveyor_step_duration_seconds_count", labels] == 1
    assert got["conveyor_step_duration_seconds_bucket", (("le", "+Inf"), *labels)] == 1
    assert got["conveyor_step_duration_seconds_bucket", (("le", "3600.0"), *labels)] == 1


def test_the_openapi_document_is_valid_openapi(client: FlaskClient) -> None:
    answer = client.get("/api/v1/openapi.json")

    document = body(answer)
    validate(document)  # raises when the document is not valid OpenAPI 3.1
    assert document["openapi"].startswith("3.1")


def test_the_document_lists_every_route_the_app_serves(client: FlaskClient, app: Flask) -> None:
    document = body(client.get("/api/v1/openapi.json"))

    served = {
        (method, _openapi_path(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert served == documented
    assert len(documented) == len(ROUTES)


def _openapi_path(rule: str) -> str:
    for prefix in ("<path:", "<"):
        rule = rule.replace(prefix, "{")
    return rule.replace(">", "}")


def test_the_documents_operations_name_their_models_statuses_and_security(
    client: FlaskClient,
) -> None:
    document = body(client.get("/api/v1/openapi.json"))
    paths = document["paths"]

    submit_op = paths["/api/v1/runs"]["post"]
    assert submit_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitRun"
    }
    assert {"200", "201", "400", "401", "403", "422", "503"} <= set(submit_op["responses"])
    assert submit_op["security"] == [{"bearer": []}]
    assert any(p["name"] == "Idempotency-Key" for p in submit_op["parameters"])
    assert paths["/api/v1/healthz"]["get"]["security"] == []
    listing = {p["name"] for p in paths["/api/v1/runs"]["get"]["parameters"]}
    assert listing == {"status", "pipeline", "limit", "cursor"}
    follow = paths["/api/v1/runs/{run_id}/steps/{step}/logs"]["get"]["responses"]["200"]
    assert set(follow["content"]) == {"application/json", "text/event-stream"}
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "detail"}
    json.dumps(document)  # plain JSON all the way down
