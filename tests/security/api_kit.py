"""Helpers of the hostile-input tests of the API (fixtures: ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask.testing import FlaskClient

API = "/api/v1"
RUNS = f"{API}/runs"
PIPELINES = f"{API}/pipelines"
ONE_STEP = """\
pipelines:
  tiny:
    steps:
      - {name: only, type: step.log, config: {message: hi}}
"""

Headers = dict[str, str]


def json_of(answer: Any) -> dict[str, Any]:
    """The JSON object of an answer, asserting it is JSON."""
    assert answer.is_json, (answer.status_code, answer.data[:300])
    data: dict[str, Any] = answer.json
    return data


def raw_post(client: FlaskClient, path: str, text: str, headers: Mapping[str, str]) -> Any:
    """POST ``text`` as a JSON body, byte for byte (NaN, ``\\ud800``... as written)."""
    return client.post(
        path,
        data=text.encode("utf-8", "surrogatepass"),
        headers={**headers, "Content-Type": "application/json"},
    )
