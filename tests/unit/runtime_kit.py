"""A harness driving the runtime step by step with scripted outcomes (no threads)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.engine.attempt import Finished, Outcome
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.plan import Compiler
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher


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
class Harness:
    """A runtime on ``store`` whose dispatches wait in ``recorder`` for the test to play."""

    runtime: Runtime
    recorder: MemoryDispatcher
    store: Store

    @classmethod
    def on(cls, store: Store) -> Harness:
        """A harness on ``store`` with nothing dispatched yet."""
        recorder = MemoryDispatcher()
        return cls(Runtime(store, TemplateEngine(), recorder), recorder, store)

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


@pytest.fixture(name="h")
def sqlite_harness(sqlite_store: SqlStore) -> Harness:
    """``h`` on SQLite only, for a module whose tests reach SQL through its store.

    Such a module imports this fixture, which then stands for the ``h`` of every store.
    """
    return Harness.on(sqlite_store)


@pytest.fixture(name="store")
def sqlite_only_store(sqlite_store: SqlStore) -> SqlStore:
    """``store`` on SQLite only, for a module whose tests read the database file.

    Such a module imports this fixture, which then stands for ``store`` there.
    """
    return sqlite_store
