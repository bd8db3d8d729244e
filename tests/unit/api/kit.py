"""Helpers for the API's tests: pipelines, a switchable broker, playing the worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.orchestrator.engine.attempt import Finished, Outcome
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.testing import MemoryDispatcher

RUNS = "/api/v1/runs"
TWO_STEPS = """\
pipelines:
  build:
    steps:
      - {name: compile, type: step.log, config: {message: compiling}}
      - {name: package, type: step.shell_exec, config: {commands: [make]}}
"""
ONE_STEP = """\
pipelines:
  tiny:
    steps:
      - {name: only, type: step.log, config: {message: hi}}
"""
INVALID = """\
pipelines:
  broken:
    steps:
      - name: a
        type: step.nope
      - name: b
        type: step.log
        config: {mesage: typo}
"""


@dataclass
class Broker:
    """A broker check: answers while ``up``, raises like a dead broker otherwise."""

    up: bool = True

    def ping(self) -> None:
        """Raise unless the broker is up."""
        if not self.up:
            raise ConveyorError("broker unavailable: connection refused")


def submit(
    client: FlaskClient,
    headers: Mapping[str, str],
    definition: str = ONE_STEP,
    **fields: Any,
) -> dict[str, Any]:
    """Start a run of an inline definition; the run as the API answered it."""
    answer = client.post(RUNS, json={"definition": definition, **fields}, headers=dict(headers))
    assert answer.status_code == 201, answer.json
    return body(answer)


def work(
    services: Services,
    recorder: MemoryDispatcher,
    *,
    fail: Sequence[str] = (),
    logs: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Play the worker: run every dispatched step (failing those in ``fail``), log lines."""
    runtime = services.runtime
    while recorder.sent:
        ref, _ = recorder.sent.pop(0)
        if runtime.claim(ref, "test-worker") is None:
            continue
        lines = [("stdout", text) for text in (logs or {}).get(ref.step_key, ())]
        if ref.step_key in fail:
            runtime.record([Finished(ref, outcome=Outcome("exit status 2", 2), logs=lines)])
        else:
            runtime.record([Finished(ref, outputs={"exit_code": 0}, logs=lines)])


def body(answer: Any) -> dict[str, Any]:
    """The JSON object of a test client's answer (asserting it is JSON)."""
    assert answer.is_json, answer.data
    data: dict[str, Any] = answer.json
    return data
