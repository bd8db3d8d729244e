"""Every route but health, readiness and the OpenAPI document needs a bearer token;
viewers read, operators also run things, admins also manage tokens."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from conveyor.api.routes import ROUTES
from conveyor.api.routing import Route
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Role, Tokens
from tests.unit.api.kit import body

PROTECTED = [r for r in ROUTES if r.role is not None]
PUBLIC = [r for r in ROUTES if r.role is None]
BELOW = {Role.OPERATOR: "viewer", Role.ADMIN: "operator"}


def url(route: Route) -> str:
    """The route's path with every parameter filled in."""
    path = route.path
    for name in route.path_params:
        path = path.replace("{" + name + "}", "x")
    return "/api/v1" + path


def call(
    client: FlaskClient, route: Route, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    answer = client.open(url(route), method=route.method, json={}, headers=headers or {})
    return answer.status_code, body(answer) if answer.status_code != 200 else {}


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
def test_a_request_without_a_token_is_refused_with_401(client: FlaskClient, route: Route) -> None:
    status, body = call(client, route)

    assert status == 401
    assert body["error"] == "unauthorized" and "Bearer" in body["detail"]


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
def test_an_unknown_or_malformed_token_is_refused_with_401(
    client: FlaskClient, route: Route
) -> None:
    for header in ("Bearer cvt_not-a-real-one", "Basic dXNlcjpwYXNz", "Bearer ", "cvt_x"):
        status, body = call(client, route, {"Authorization": header})
        assert (status, body["error"]) == (401, "unauthorized"), header


@pytest.mark.parametrize(
    "route", [r for r in PROTECTED if r.role in BELOW], ids=lambda r: f"{r.method} {r.path}"
)
def test_a_token_with_a_weaker_role_is_refused_with_403(
    client: FlaskClient, db_store: SqlStore, route: Route
) -> None:
    assert route.role is not None
    _, secret = Tokens(db_store).create("weak", BELOW[route.role])

    status, body = call(client, route, {"Authorization": f"Bearer {secret}"})

    assert status == 403
    assert body["error"] == "forbidden" and route.role.value in body["detail"]


@pytest.mark.parametrize("route", PUBLIC, ids=lambda r: f"{r.method} {r.path}")
def test_health_readiness_and_the_document_need_no_token(client: FlaskClient, route: Route) -> None:
    status, _ = call(client, route)

    assert status == (404 if route.path_params else 200)  # no file of the docs is named `x`


def test_the_roles_are_as_documented() -> None:
    roles = {(r.method, r.path): r.role for r in ROUTES}

    assert roles["GET", "/runs"] == roles["GET", "/runs/{run_id}"] == Role.VIEWER
    assert roles["GET", "/metrics"] == roles["GET", "/step-types"] == Role.VIEWER
    assert roles["POST", "/runs"] == roles["POST", "/runs/{run_id}/cancel"] == Role.OPERATOR
    assert roles["POST", "/runs/{run_id}/retry"] == roles["POST", "/pipelines"] == Role.OPERATOR
    assert {roles["POST", "/tokens"], roles["GET", "/tokens"]} == {Role.ADMIN}
    assert roles["DELETE", "/tokens/{token_id}"] == Role.ADMIN


def test_a_revoked_token_stops_working_at_once(client: FlaskClient, admin: dict[str, str]) -> None:
    made = client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=admin)
    assert made.status_code == 201
    token = body(made)
    headers = {"Authorization": f"Bearer {token['secret']}"}
    assert client.get("/api/v1/runs", headers=headers).status_code == 200

    revoked = client.delete(f"/api/v1/tokens/{token['id']}", headers=admin)

    assert (revoked.status_code, revoked.data) == (204, b"")
    assert client.get("/api/v1/runs", headers=headers).status_code == 401
    again = client.delete(f"/api/v1/tokens/{token['id']}", headers=admin)
    assert (again.status_code, body(again)["error"]) == (404, "not_found")


def test_tokens_are_listed_without_their_secrets(
    client: FlaskClient, admin: dict[str, str]
) -> None:
    made = client.post(
        "/api/v1/tokens", json={"name": "deploy-bot", "role": "operator"}, headers=admin
    )
    secret = body(made)["secret"]

    listed = client.get("/api/v1/tokens", headers=admin)

    assert listed.status_code == 200
    assert secret not in listed.get_data(as_text=True)
    names = {(t["name"], t["role"]) for t in body(listed)["items"]}
    assert ("deploy-bot", "operator") in names and ("admin-bot", "admin") in names


def test_a_token_needs_a_known_role(client: FlaskClient, admin: dict[str, str]) -> None:
    answer = client.post("/api/v1/tokens", json={"name": "x", "role": "root"}, headers=admin)

    assert answer.status_code == 400
    assert body(answer)["detail"].startswith("role:")
