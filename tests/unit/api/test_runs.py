"""Runs over the API: submit (inline or registered, idempotently), read, list, cancel, retry."""

from __future__ import annotations

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import INVALID, ONE_STEP, RUNS, TWO_STEPS, body, submit, work

Headers = dict[str, str]


def test_submitting_a_definition_answers_201_with_the_run_and_dispatches_its_first_step(
    client: FlaskClient, operator: Headers, recorder: MemoryDispatcher
) -> None:
    answer = client.post(
        RUNS, json={"definition": TWO_STEPS, "params": {"version": "1.2"}}, headers=operator
    )

    assert answer.status_code == 201
    run = body(answer)
    assert answer.headers["Location"] == f"/api/v1/runs/{run['id']}"
    assert (run["pipeline"], run["status"], run["params"]) == (
        "build",
        "running",
        {"version": "1.2"},
    )
    assert run["submitted_by"] == "operator-bot"
    assert [(s["key"], s["status"], s["queue"]) for s in run["steps"]] == [
        ("compile", "queued", "control"),
        ("package", "pending", "sandbox"),
    ]
    assert [(ref.step_key, ref.queue) for ref, _ in recorder.sent] == [("compile", "control")]


def test_the_run_moves_on_as_workers_report(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, TWO_STEPS)

    work(services, recorder)

    done = body(client.get(f"{RUNS}/{run['id']}", headers=operator))
    assert done["status"] == "succeeded" and done["duration"] is not None
    assert [s["status"] for s in done["steps"]] == ["succeeded", "succeeded"]
    assert all(s["attempts"] == 1 and s["duration"] is not None for s in done["steps"])


def test_a_run_can_be_read_by_a_unique_prefix_of_its_id(
    client: FlaskClient, viewer: Headers, operator: Headers
) -> None:
    run = submit(client, operator)

    found = client.get(f"{RUNS}/{run['id'][:8]}", headers=viewer)

    assert found.status_code == 200 and body(found)["id"] == run["id"]
    missing = client.get(f"{RUNS}/00000000-dead-beef", headers=viewer)
    assert (missing.status_code, body(missing)["error"]) == (404, "not_found")


def test_an_invalid_pipeline_is_422_with_every_problem_and_its_line(
    client: FlaskClient, operator: Headers, recorder: MemoryDispatcher
) -> None:
    answer = client.post(RUNS, json={"definition": INVALID}, headers=operator)

    assert answer.status_code == 422
    error = body(answer)
    assert error["error"] == "spec_error"
    problems = {(p["path"], p["line"]) for p in error["problems"]}
    assert ("pipelines.broken.steps[0].type", 5) in problems
    assert any(p.startswith("pipelines.broken.steps[1].config") for p, _ in problems)
    assert recorder.sent == []
    listed = body(client.get(RUNS, headers=operator))
    assert listed["items"] == []  # nothing was written


def test_malformed_requests_are_400_naming_what_is_wrong(
    client: FlaskClient, operator: Headers
) -> None:
    cases = {
        "not json": (b"{definition:", "must be a JSON object"),
        "a list": (b"[1, 2]", "must be a JSON object"),
        "no source": (b'{"params": {}}', "give `pipeline`"),
        "unknown field": (b'{"definition": "x", "parms": {}}', "parms: Extra inputs"),
        "bad params": (b'{"pipeline": "p", "params": [1]}', "params: Input should be"),
        "version inline": (b'{"definition": "x", "version": 2}', "`version` picks"),
    }
    for name, (data, expected) in cases.items():
        answer = client.post(RUNS, data=data, headers=operator, content_type="application/json")
        error = body(answer)
        assert (answer.status_code, error["error"]) == (400, "bad_request"), name
        assert expected in error["detail"], (name, error)


def test_a_registered_pipeline_runs_by_name_and_by_version(
    client: FlaskClient, operator: Headers
) -> None:
    first = body(client.post("/api/v1/pipelines", json={"definition": ONE_STEP}, headers=operator))
    changed = ONE_STEP.replace("message: hi", "message: hello")
    second = body(client.post("/api/v1/pipelines", json={"definition": changed}, headers=operator))

    newest = client.post(RUNS, json={"pipeline": "tiny"}, headers=operator)
    older = client.post(RUNS, json={"pipeline": "tiny", "version": 1}, headers=operator)

    assert (newest.status_code, older.status_code) == (201, 201)
    assert body(newest)["definition_id"] == second["id"]
    assert body(older)["definition_id"] == first["id"]
    versions = body(client.get("/api/v1/pipelines/tiny", headers=operator))["items"]
    assert [v["version"] for v in versions] == [2, 1]  # running v1 made no version 3


def test_an_unknown_pipeline_or_version_is_404(client: FlaskClient, operator: Headers) -> None:
    client.post("/api/v1/pipelines", json={"definition": ONE_STEP}, headers=operator)

    for request, expected in (
        ({"pipeline": "nope"}, "no registered pipeline 'nope'"),
        ({"pipeline": "tiny", "version": 7}, "no version 7 of pipeline 'tiny'"),
    ):
        answer = client.post(RUNS, json=request, headers=operator)
        assert (answer.status_code, body(answer)["detail"]) == (404, expected)


def test_the_same_idempotency_key_gives_the_same_run(
    client: FlaskClient, operator: Headers, recorder: MemoryDispatcher
) -> None:
    headers = {**operator, "Idempotency-Key": "deploy-42"}
    first = client.post(RUNS, json={"definition": ONE_STEP}, headers=headers)

    again = client.post(RUNS, json={"definition": ONE_STEP}, headers=headers)
    other = client.post(
        RUNS, json={"definition": ONE_STEP}, headers={**operator, "Idempotency-Key": "deploy-43"}
    )

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert body(again)["id"] == body(first)["id"] != body(other)["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert len(recorder.sent) == 2  # the replay dispatched nothing
    assert len(body(client.get(RUNS, headers=operator))["items"]) == 2


def test_an_idempotency_key_replays_even_when_the_body_changed(
    client: FlaskClient, operator: Headers
) -> None:
    headers = {**operator, "Idempotency-Key": "k1"}
    first = body(client.post(RUNS, json={"definition": ONE_STEP}, headers=headers))

    again = client.post(RUNS, json={"definition": INVALID}, headers=headers)

    assert (again.status_code, body(again)["id"]) == (200, first["id"])


def test_an_idempotency_key_must_fit(client: FlaskClient, operator: Headers) -> None:
    for key in ("", "   ", "k" * 201):
        headers = {**operator, "Idempotency-Key": key}
        answer = client.post(RUNS, json={"definition": ONE_STEP}, headers=headers)
        assert answer.status_code == 400, repr(key)


def test_cancelling_stops_the_run_and_cancelling_again_is_409(
    client: FlaskClient, operator: Headers
) -> None:
    run = submit(client, operator, TWO_STEPS)

    answer = client.post(f"{RUNS}/{run['id']}/cancel", headers=operator)

    cancelled = body(answer)
    assert (answer.status_code, cancelled["status"]) == (200, "cancelled")
    assert cancelled["error"] == "cancelled by operator-bot"
    assert {s["status"] for s in cancelled["steps"]} == {"cancelled"}
    again = client.post(f"{RUNS}/{run['id']}/cancel", headers=operator)
    assert (again.status_code, body(again)["error"]) == (409, "conflict")


def test_retrying_reruns_failed_steps_and_keeps_succeeded_ones(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, TWO_STEPS)
    work(services, recorder, fail=["package"])
    assert body(client.get(f"{RUNS}/{run['id']}", headers=operator))["status"] == "failed"

    answer = client.post(f"{RUNS}/{run['id']}/retry", headers=operator)

    retried = body(answer)
    assert (answer.status_code, retried["status"]) == (200, "running")
    steps = {s["key"]: s for s in retried["steps"]}
    assert (steps["compile"]["status"], steps["compile"]["attempts"]) == ("succeeded", 1)
    assert (steps["package"]["status"], steps["package"]["attempts"]) == ("queued", 2)
    work(services, recorder)
    assert body(client.get(f"{RUNS}/{run['id']}", headers=operator))["status"] == "succeeded"


def test_only_a_failed_or_cancelled_run_can_be_retried(
    client: FlaskClient, operator: Headers
) -> None:
    run = submit(client, operator)

    answer = client.post(f"{RUNS}/{run['id']}/retry", headers=operator)

    assert answer.status_code == 409
    assert "only failed or cancelled runs are retried" in body(answer)["detail"]


def test_events_are_read_in_order_from_a_sequence_number(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, TWO_STEPS)
    work(services, recorder)

    everything = body(client.get(f"{RUNS}/{run['id']}/events", headers=operator))
    later = body(client.get(f"{RUNS}/{run['id']}/events?after=3", headers=operator))

    seqs = [e["seq"] for e in everything["items"]]
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps
    assert everything["items"][0]["type"] == "run.created"
    assert everything["items"][-1]["type"] == "run.succeeded"
    assert [e["seq"] for e in later["items"]] == seqs[3:]
    assert later["last_seq"] == everything["last_seq"] == seqs[-1]
    nothing = body(client.get(f"{RUNS}/{run['id']}/events?after={seqs[-1]}", headers=operator))
    assert (nothing["items"], nothing["last_seq"]) == ([], seqs[-1])
    bad = client.get(f"{RUNS}/{run['id']}/events?after=-1", headers=operator)
    assert bad.status_code == 400
