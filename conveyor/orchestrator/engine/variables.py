"""What templates see, and the masking of secret values.

A run's log masks each secret's value, its lines, and the common encodings of it
(base64 standard and URL-safe, also where it sits inside a longer base64 text; hex in
lower and upper case; URL-encoding; JSON escaping), and what templates derived from it
(``Masker.add``, fed by the engine's taint tracking).

As in the seed, run params (the trigger data) are at the top level (``{{ .version }}``)
and step outputs under ``steps``; ``params``, ``env``/``Env``, ``secrets``, ``matrix``
and ``run`` are there too.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.pipeline.templatetaint import MIN_SECRET_LENGTH
from conveyor.orchestrator.store.records import RunRecord

if TYPE_CHECKING:
    from conveyor.orchestrator.pipeline.plan import ExecutionPlan, PlanStep

MASK = "***"
#: Texts longer than this are searched for each secret value before the regex runs.
_SEARCH_FIRST = 4096
#: A base64 run shorter than this, cut from the middle of a longer text, is not masked
#: (four characters of base64 turn up by chance).
MIN_BASE64_CORE = 6

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Masker", "base_context", "condition_context"]


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
    """Replaces the values of a run's secrets (and their encodings) with ``***``."""

    def __init__(self, secrets: Mapping[str, str], derived: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        for value in secrets.values():
            self._values.update(_forms(value))
        self._values.update(derived)
        self._kept: list[str] = []  # the values masked, longest first
        self._pattern = self._compile()

    def add(self, values: Iterable[str]) -> None:
        """Mask these too (text a template derived from a secret)."""
        new = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - self._values
        if new:
            self._values |= new
            self._pattern = self._compile()

    def _compile(self) -> re.Pattern[str] | None:
        kept = sorted((v for v in self._values if len(v) >= MIN_SECRET_LENGTH), key=len)
        kept.reverse()  # the longest first: a secret inside a derived value masks less
        self._kept = kept
        return re.compile("|".join(re.escape(v) for v in kept)) if kept else None

    def __call__(self, text: str) -> str:
        """``text`` with every secret value masked."""
        if self._pattern is None or not text:
            return text
        # A long text (a block of a step's output) is looked through for each value
        # with str's own search first: many times faster than the alternation, and
        # most blocks hold no secret at all.
        if len(text) > _SEARCH_FIRST and not any(v in text for v in self._kept):
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


def _forms(value: str) -> set[str]:
    """A secret as a log may show it: itself, its lines, and its common encodings."""
    forms = {value, *(line.strip() for line in value.splitlines())}
    raw = value.encode()
    forms.update({raw.hex(), raw.hex().upper()})
    forms.update({urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)})
    forms.update({json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms.update({whole, whole.rstrip("=")})
        forms.update(_base64_cores(raw, encode))
    return {form for form in forms if form}


def _base64_cores(raw: bytes, encode: Any) -> set[str]:
    """The base64 characters that only the secret decides, at each of the three offsets
    it can start at inside longer base64 text (``user:secret`` in a Basic header)."""
    cores = set()
    for offset in range(3):
        text = encode(b"\0" * offset + raw).decode()
        start = -(-8 * offset // 6)  # the first character made of the secret's bits only
        end = 8 * (offset + len(raw)) // 6  # the last one ends where the secret does
        core = text[start:end]
        if len(core) >= MIN_BASE64_CORE:
            cores.add(core)
    return cores
