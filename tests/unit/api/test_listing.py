"""Listing runs a page at a time, and the registry of pipelines."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.unit.api.kit import INVALID, ONE_STEP, RUNS, TWO_STEPS, body, submit

Headers = dict[str, str]


def pages(client: FlaskClient, headers: Headers, query: str) -> list[list[str]]:
    """Every page of ``GET /runs?query``, following ``next_cursor`` to the end."""
    found: list[list[str]] = []
    url = f"{RUNS}?{query}"
    while True:
        page = body(client.get(url, headers=headers))
        found.append([r["id"] for r in page["items"]])
        if page["next_cursor"] is None:
            return found
        url = f"{RUNS}?{query}&cursor={page['next_cursor']}"


def test_runs_come_newest_first_a_page_at_a_time(client: FlaskClient, operator: Headers) -> None:
    ids = [submit(client, operator)["id"] for _ in range(7)]

    got = pages(client, operator, "limit=3")

    assert [len(p) for p in got] == [3, 3, 1]
    assert [i for p in got for i in p] == ids[::-1]


def test_a_cursor_is_stable_while_new_runs_arrive(client: FlaskClient, operator: Headers) -> None:
    ids = [submit(client, operator)["id"] for _ in range(4)]
    first = body(client.get(f"{RUNS}?limit=2", headers=operator))

    newer = submit(client, operator)["id"]
    second = body(client.get(f"{RUNS}?limit=2&cursor={first['next_cursor']}", headers=operator))

    assert [r["id"] for r in first["items"]] == [ids[3], ids[2]]
    assert [r["id"] for r in second["items"]] == [ids[1], ids[0]]  # no repeat, no skip
    assert newer not in [r["id"] for r in second["items"]]


def test_runs_are_filtered_by_status_and_pipeline(client: FlaskClient, operator: Headers) -> None:
    tiny = [submit(client, operator)["id"] for _ in range(3)]
    build = submit(client, operator, TWO_STEPS)["id"]
    client.post(f"{RUNS}/{tiny[1]}/cancel", headers=operator)

    assert pages(client, operator, "pipeline=build") == [[build]]
    assert pages(client, operator, "status=cancelled") == [[tiny[1]]]
    assert pages(client, operator, "status=running&pipeline=tiny&limit=1") == [[tiny[2]], [tiny[0]]]


def test_bad_listing_parameters_are_400(client: FlaskClient, viewer: Headers) -> None:
    for query in ("limit=0", "limit=201", "limit=x", "status=sleeping", "cursor=garbage!"):
        answer = client.get(f"{RUNS}?{query}", headers=viewer)
        assert (answer.status_code, body(answer)["error"]) == (400, "bad_request"), query


def test_unknown_query_parameters_are_ignored(client: FlaskClient, viewer: Headers) -> None:
    answer = client.get(f"{RUNS}?_=1700000000", headers=viewer)

    assert answer.status_code == 200


def register(client: FlaskClient, headers: Headers, definition: str, **extra: Any) -> Any:
    return client.post(
        "/api/v1/pipelines", json={"definition": definition, **extra}, headers=headers
    )


def test_registering_makes_a_new_version_only_when_the_file_changed(
    client: FlaskClient, operator: Headers
) -> None:
    first = register(client, operator, ONE_STEP)
    same = register(client, operator, ONE_STEP)
    changed = register(client, operator, ONE_STEP.replace("hi", "hello"))

    assert (first.status_code, same.status_code, changed.status_code) == (201, 200, 201)
    assert [body(a)["version"] for a in (first, same, changed)] == [1, 1, 2]
    assert [body(a)["created"] for a in (first, same, changed)] == [True, False, True]
    assert first.headers["Location"] == "/api/v1/pipelines/tiny/versions/1"


def test_registered_pipelines_are_listed_and_read(client: FlaskClient, operator: Headers) -> None:
    register(client, operator, ONE_STEP)
    register(client, operator, ONE_STEP.replace("hi", "hello"))
    register(client, operator, TWO_STEPS)

    listed = body(client.get("/api/v1/pipelines", headers=operator))["items"]
    versions = body(client.get("/api/v1/pipelines/tiny", headers=operator))["items"]
    one = body(client.get("/api/v1/pipelines/tiny/versions/1", headers=operator))

    assert [(p["name"], p["version"]) for p in listed] == [("build", 1), ("tiny", 2)]
    assert [v["version"] for v in versions] == [2, 1]
    assert one["definition"] == ONE_STEP
    for missing in ("/pipelines/nope", "/pipelines/tiny/versions/9", "/pipelines/tiny/versions/x"):
        assert client.get(f"/api/v1{missing}", headers=operator).status_code == 404, missing


def test_registering_an_invalid_file_is_422(client: FlaskClient, operator: Headers) -> None:
    answer = register(client, operator, INVALID)

    assert answer.status_code == 422 and body(answer)["problems"]
    assert body(client.get("/api/v1/pipelines", headers=operator))["items"] == []


def test_one_pipeline_of_a_file_with_several_is_registered_by_name(
    client: FlaskClient, operator: Headers
) -> None:
    both = ONE_STEP + TWO_STEPS.removeprefix("pipelines:\n")

    unnamed = register(client, operator, both)
    named = register(client, operator, both, pipeline="build")

    assert unnamed.status_code == 422 and "several pipelines" in body(unnamed)["detail"]
    assert (named.status_code, body(named)["name"]) == (201, "build")
