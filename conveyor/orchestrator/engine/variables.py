"""What templates see, and the masking of secret values.

As in the seed, run params (the trigger data) are at the top level (``{{ .version }}``)
and step outputs under ``steps``; ``params``, ``env``/``Env``, ``secrets``, ``matrix``
and ``run`` are there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.store.records import RunRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep

MASK = "***"
#: Shorter values would turn every log into asterisks; GitHub and GitLab draw the same line.
MIN_SECRET_LENGTH = 3


def base_context(
    run: RunRecord,
    plan_step: PlanStep,
    outputs: Mapping[str, Mapping[str, Any]],
    secrets: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The template context of one step of one run."""
    params = run.params
    context: dict[str, Any] = dict(params)
    context.update(
        params=params,
        steps=outputs,
        secrets=secrets,
        matrix=plan_step.matrix,
        run={"id": run.id, "pipeline": run.pipeline},
        RunID=run.id,
        ExecutionID=run.id,
        Pipeline=run.pipeline,
        env=env or {},
        Env=env or {},
    )
    return context


def condition_context(
    run: RunRecord,
    plan: ExecutionPlan,
    plan_step: PlanStep,
    outputs: Mapping[str, Mapping[str, Any]],
    secrets: Mapping[str, str],
    failing: str | None,
) -> dict[str, Any]:
    """The context of ``if``/``skip_if``, with GitHub-style status functions."""
    context = base_context(run, plan_step, outputs, secrets, plan.env)
    context.update(
        success=lambda: failing is None,
        failure=lambda: failing is not None,
        always=lambda: True,
        cancelled=lambda: False,
    )
    return context


class Masker:
    """Replaces the values of a run's secrets with ``***``."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        values: set[str] = set()
        for value in secrets.values():
            values.add(value)
            values.update(line.strip() for line in value.splitlines())
        kept = sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in kept)) if kept else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret value masked."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """Mask strings anywhere inside a JSON-like value."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
