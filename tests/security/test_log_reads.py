"""Hostile reads of a step's log: cursors and resume points that are not line ids."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.security.api_kit import ONE_STEP, RUNS, Headers, json_of


def _run(client: FlaskClient, admin: Headers) -> str:
    """A run whose only step has ended (cancelled): following its log ends at once."""
    answer = client.post(RUNS, json={"definition": ONE_STEP}, headers=admin)
    assert answer.status_code == 201, answer.data
    run = str(json_of(answer)["id"])
    assert client.post(f"{RUNS}/{run}/cancel", headers=admin).status_code == 200
    return run


@pytest.mark.parametrize(
    "last_event_id",
    ["9" * 30, str(2**63), str(2**64 + 5), "²", "١٢", "-1", " 3", "0x10", "1e9"],
)
def test_a_resume_point_that_is_no_line_id_is_ignored_not_a_500(
    client: FlaskClient, admin: Headers, last_event_id: str
) -> None:
    run = _run(client, admin)
    url = f"{RUNS}/{run}/steps/only/logs?follow=1"

    answer = client.get(url, headers={**admin, "Last-Event-ID": last_event_id})

    assert answer.status_code == 200
    assert answer.data.endswith(b'event: end\ndata: {"status": "cancelled"}\n\n')
