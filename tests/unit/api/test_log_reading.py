"""`conveyor logs` over the API: the whole of a long log, page after page, or its tail,
and never a silent stop."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.cli.remote import Remote
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.api.kit import submit

Headers = dict[str, str]


class Client:
    """The CLI's ApiClient, answered by the Flask test client instead of the network."""

    def __init__(self, client: FlaskClient, headers: Headers) -> None:
        self.client, self.headers = client, headers
        self.gets = 0

    def get(self, path: str, **query: Any) -> Any:
        given = {k: v for k, v in query.items() if v is not None}
        self.gets += 1
        answer = self.client.get(f"/api/v1{path}?{urlencode(given)}", headers=self.headers)
        assert answer.status_code == 200, answer.data[:300]
        return answer.get_json()


def loud_step(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> tuple[str, list[str]]:
    """A run whose step printed 250,000 lines of 40 bytes: (run id, the lines)."""
    run = submit(client, operator)
    ref, _ = recorder.sent.pop()
    assert services.runtime.claim(ref, "test-worker") is not None
    printed = [f"{i:08d}".ljust(39, "-") for i in range(250_000)]
    for start in range(0, len(printed), 50_000):
        block = "\n".join(printed[start : start + 50_000])
        services.store.append_logs(ref.run_id, ref.step_key, ref.attempt, [("stdout", block)])
    return run["id"], printed


def test_the_cli_reads_a_long_log_to_its_end_page_after_page(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run_id, printed = loud_step(client, operator, services, recorder)
    api = Client(client, operator)

    found = [line.text for line in Remote(api).logs(run_id, "only", None)]  # type: ignore[arg-type]

    assert found == printed
    assert api.gets >= 25  # 10,000 lines a page at most: it went on page after page


def test_the_cli_reads_the_tail_and_says_when_the_answer_left_lines_out(
    client: FlaskClient, operator: Headers, services: Services, recorder: MemoryDispatcher
) -> None:
    run_id, printed = loud_step(client, operator, services, recorder)
    remote = Remote(Client(client, operator))  # type: ignore[arg-type]

    lines, cut = remote.tail(run_id, "only", 100, None)

    assert [x.text for x in lines] == printed[-100:] and not cut
    assert lines[-1].id > lines[0].id
