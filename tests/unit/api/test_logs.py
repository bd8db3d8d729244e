"""A step's log over the API: read whole, after a line, the tail, or followed live (SSE)."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.orchestrator.engine.attempt import Finished
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import RUNS, TWO_STEPS, body, submit, work

Headers = dict[str, str]
MATRIX = """\
pipelines:
  cross:
    steps:
      - name: build
        type: step.log
        matrix: {platform: [linux/amd64]}
        config: {message: "{{ .matrix.platform }}"}
"""


def events(stream: bytes) -> list[tuple[str, str]]:
    """(event, data) of each server-sent event; comments are left out."""
    found = []
    for block in stream.decode().strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            found.append((fields["event"], fields["data"]))
    return found


def test_a_steps_log_is_read_whole_after_a_line_or_by_its_tail(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, TWO_STEPS)
    work(services, recorder, logs={"compile": ["one", "two", "three"]})
    url = f"{RUNS}/{run['id']}/steps/compile/logs"

    whole = body(client.get(url, headers=operator))
    after = body(client.get(f"{url}?after={whole['items'][0]['id']}", headers=operator))
    tail = body(client.get(f"{url}?tail=1", headers=operator))

    assert [x["text"] for x in whole["items"]] == ["one", "two", "three"]
    assert whole["status"] == "succeeded" and whole["last_id"] == whole["items"][-1]["id"]
    assert [x["text"] for x in after["items"]] == ["two", "three"]
    assert [x["text"] for x in tail["items"]] == ["three"]
    assert whole["items"][0]["attempt"] == 1 and whole["items"][0]["stream"] == "stdout"


def test_an_unknown_step_or_run_is_404(
    client: FlaskClient, viewer: Headers, operator: Headers
) -> None:
    run = submit(client, operator)

    for url in (f"{RUNS}/{run['id']}/steps/nope/logs", f"{RUNS}/feedbeef/steps/only/logs"):
        answer = client.get(url, headers=viewer)
        assert (answer.status_code, body(answer)["error"]) == (404, "not_found"), url


def test_a_matrix_steps_key_with_a_slash_reaches_its_log(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, MATRIX)
    work(services, recorder, logs={"build[platform=linux/amd64]": ["built"]})
    key = quote("build[platform=linux/amd64]", safe="")

    answer = client.get(f"{RUNS}/{run['id']}/steps/{key}/logs", headers=operator)

    assert answer.status_code == 200
    assert [x["text"] for x in body(answer)["items"]] == ["built"]


def test_following_an_ended_step_sends_its_lines_then_the_end(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator, TWO_STEPS)
    work(services, recorder, fail=["package"], logs={"package": ["make: *** Error 2"]})

    answer = client.get(f"{RUNS}/{run['id']}/steps/package/logs?follow=1", headers=operator)

    assert answer.mimetype == "text/event-stream"
    assert answer.headers["Cache-Control"] == "no-cache"
    got = events(answer.data)
    assert [e for e, _ in got] == ["log", "end"]
    assert json.loads(got[0][1])["text"] == "make: *** Error 2"
    assert json.loads(got[1][1]) == {"status": "failed"}


def test_following_a_running_step_streams_lines_as_they_come_until_it_ends(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None

    def worker() -> None:
        for number in range(3):
            time.sleep(0.1)
            services.store.append_logs(
                ref.run_id, ref.step_key, ref.attempt, [("stdout", f"line {number}")]
            )
        services.runtime.record([Finished(ref, outputs={}, logs=[("stdout", "last line")])])

    thread = threading.Thread(target=worker)
    started = time.monotonic()
    thread.start()
    answer = client.get(
        f"{RUNS}/{run['id']}/steps/only/logs?follow=true", headers=operator, buffered=False
    )
    chunks = [(time.monotonic() - started, chunk) for chunk in answer.response]
    thread.join()

    got = events(b"".join(c for _, c in chunks))
    texts = [json.loads(data)["text"] for event, data in got if event == "log"]
    assert texts == ["line 0", "line 1", "line 2", "last line"]
    assert got[-1] == ("end", '{"status": "succeeded"}')
    first_line_at = next(t for t, c in chunks if b"line 0" in c)
    assert first_line_at < chunks[-1][0] - 0.1  # sent while the step still ran


def test_a_follower_that_reconnects_resumes_after_the_last_line_it_saw(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator)
    work(services, recorder, logs={"only": ["a", "b", "c"]})
    url = f"{RUNS}/{run['id']}/steps/only/logs"
    first = body(client.get(url, headers=operator))["items"][0]["id"]

    answer = client.get(f"{url}?follow=1", headers={**operator, "Last-Event-ID": str(first)})

    texts = [json.loads(d)["text"] for e, d in events(answer.data) if e == "log"]
    assert texts == ["b", "c"]


def test_a_large_log_is_read_in_bounded_pages_that_go_on_from_the_last_id(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    # Given a step whose log is 6 MB: 60,000 lines of 100 bytes
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None
    printed = [f"{i:08d}".ljust(99, "-") for i in range(60_000)]
    for start in range(0, len(printed), 500):
        batch = [("stdout", text) for text in printed[start : start + 500]]
        services.store.append_logs(ref.run_id, ref.step_key, ref.attempt, batch)
    url = f"{RUNS}/{run['id']}/steps/only/logs"

    # When it is read without saying how much, and then with a byte bound
    first = client.get(url, headers=operator)
    small = client.get(f"{url}?max_bytes=20000&limit=10000", headers=operator)

    # Then each answer is a bounded page that says the log goes on
    assert first.status_code == 200 and len(first.data) < 1_000 * 250
    page = body(first)
    assert [x["text"] for x in page["items"]] == printed[:1000]
    assert page["more"] is True and page["last_id"] == page["items"][-1]["id"]
    assert len(small.data) < 20_000 * 2 and body(small)["more"] is True
    assert len(body(small)["items"]) == 200

    # And the pages, read on from each last_id, give the whole log once, then stop
    seen, after, pages = [], 0, 0
    while True:
        answer = body(client.get(f"{url}?after={after}&max_bytes=8388608", headers=operator))
        seen += [x["text"] for x in answer["items"]]
        after, pages = answer["last_id"], pages + 1
        if not answer["more"]:
            break
    assert seen == printed and pages == 60  # 1000 lines a page: limit bounds it first


def test_the_tail_is_bounded_by_bytes_too(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run = submit(client, operator)
    work(services, recorder, logs={"only": ["z" * 10_000] * 50})

    answer = body(
        client.get(f"{RUNS}/{run['id']}/steps/only/logs?tail=50&max_bytes=30000", headers=operator)
    )

    assert len(answer["items"]) == 2 and answer["more"] is True
