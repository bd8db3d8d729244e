"""A harness driving the runtime step by step with scripted outcomes (no threads)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.attempt import Finished, Outcome
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.plan import Compiler
from conveyor.orchestrator.store.sql import SqlStore


class NoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str | None = None


class Noop:
    """A step type that does nothing (the runtime never calls run() here)."""

    Config = NoopConfig
    queue = "control"
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: Any, config: Any) -> Mapping[str, Any]:
        return {}


class Brief(Noop):
    """A brief step type: the runtime coalesces such steps of a run."""

    brief = True


@dataclass
class Recorder:
    """The in-memory twin of a dispatcher: remembers what it was asked to run."""

    sent: list[tuple[StepRef, datetime | None]] = field(default_factory=list)

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        self.sent.append((ref, eta))


@dataclass
class Harness:
    runtime: Runtime
    recorder: Recorder
    store: SqlStore

    def start(self, yaml_text: str, params: dict[str, Any] | None = None) -> str:
        types = {"noop": Noop(), "brief": Brief()}
        compiled = Compiler(types, self.runtime.templates).compile(yaml_text)
        return self.runtime.submit(compiled.select(None), compiled.source, params or {}).id

    def drive(self, run_id: str, script: dict[str, list[Any]]) -> None:
        """Run every dispatched step: pop its next scripted outcome (default: success)."""
        while self.recorder.sent:
            ref, _ = self.recorder.sent.pop(0)
            if self.runtime.claim(ref, "w") is None:
                continue
            outcome = (script.get(ref.step_key) or ["ok"]).pop(0)
            if outcome == "ok":
                self.runtime.record(
                    [Finished(ref, outputs={"exit_code": 0, "value": ref.step_key})]
                )
            else:
                self.runtime.record([Finished(ref, outcome=outcome)])

    def statuses(self, run_id: str) -> dict[str, str]:
        return {s.key: s.status.value for s in self.store.list_steps(run_id)}


def pipeline(*steps: str, extra: str = "") -> str:
    body = "\n".join(f"      - {s}" for s in steps)
    return f"pipelines:\n  p:\n{extra}    steps:\n{body}\n"


FAIL = Outcome("boom", 1)
A = "{name: a, type: noop}"
B = "{name: b, type: noop}"
C = "{name: c, type: noop}"
