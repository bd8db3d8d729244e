"""The pipeline file as users write it: pydantic models of its structure.

The seed's format (``pipelines: NAME: {timeout, env, on_error, steps: [...]}``) runs as
it is; ``needs``, ``retry``, ``matrix`` and ``queue`` are Conveyor's. Step configs are
checked later, against each step type's own model, when the plan is compiled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conveyor.orchestrator.durations import Duration
from conveyor.orchestrator.errors import Problem, SpecError
from conveyor.orchestrator.pipeline.yamlload import Loaded, load_yaml
from conveyor.orchestrator.settings import parse_retention

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
#: Top-level keys of the seed's engine config that describe other things; reported, not run.
IGNORED_TOP_LEVEL = ("modules", "workflows", "triggers")
OnError = Literal["stop", "continue"]


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetrySpec(Strict):
    """How often and when a failed step is tried again."""

    max_attempts: int = Field(default=1, ge=1, le=100, description="Attempts in all.")
    backoff: Duration = Field(default=0.0, description="Wait before the first retry.")
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = Field(default=3600.0, description="Longest wait between tries.")
    on_exit_codes: list[int] | None = Field(
        default=None, description="Retry only when the step failed with one of these codes."
    )
    on_errors: list[str] | None = Field(
        default=None, description="Retry only when the error matches one of these regexes."
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        return float(
            min(self.backoff * self.backoff_factor ** max(attempt - 1, 0), self.max_backoff)
        )


class StepSpec(Strict):
    """One step as written in the file."""

    name: str = Field(pattern=NAME_PATTERN)
    type: str = Field(min_length=1, max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)
    if_: str | bool | None = Field(default=None, alias="if")
    skip_if: str | bool | None = None
    timeout: Duration | None = None
    on_error: OnError | None = None
    needs: list[str] | None = None
    retry: RetrySpec | None = None
    matrix: dict[str, Any] | None = None
    queue: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]{0,49}$")

    @field_validator("needs")
    @classmethod
    def _unique_needs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a step is listed twice")
        return value


class ArtifactsSpec(Strict):
    """What becomes of a pipeline's artifacts once its runs are over."""

    retention: float | None = Field(
        description="How long a finished run keeps its artifacts (30d, 12h); `forever` keeps "
        "them whatever the operator's default."
    )

    @field_validator("retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float | None:
        return parse_retention(value)


class PipelineSpec(Strict):
    """One named pipeline."""

    description: str | None = None
    timeout: Duration | None = None
    env: dict[str, str] = Field(default_factory=dict)
    on_error: OnError = "stop"
    #: None: the operator's CONVEYOR_ARTIFACT_RETENTION applies.
    artifacts: ArtifactsSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _scalar_text(v) for k, v in value.items()}
        return value


class PipelineFile(Strict):
    """A whole pipeline file."""

    name: str | None = None
    description: str | None = None
    version: str | int | None = None
    pipelines: dict[str, PipelineSpec] = Field(min_length=1)
    modules: Any = None
    workflows: Any = None
    triggers: Any = None

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, value: dict[str, PipelineSpec]) -> dict[str, PipelineSpec]:
        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"pipeline name {name!r} must match {NAME_PATTERN}")
        return value

    def ignored_keys(self) -> list[str]:
        """Top-level keys present in the file that Conveyor does not run."""
        return [key for key in IGNORED_TOP_LEVEL if getattr(self, key) is not None]


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def parse(
    text: str | bytes, *, max_bytes: int = 1_048_576, max_nodes: int = 200_000
) -> tuple[PipelineFile, Loaded]:
    """Parse a pipeline file; raise SpecError listing every problem with its line."""
    loaded = load_yaml(text, max_bytes=max_bytes, max_nodes=max_nodes)
    if not isinstance(loaded.data, dict):
        raise SpecError(Problem("", "a pipeline file is a mapping with a `pipelines:` key", 1))
    try:
        return PipelineFile.model_validate(loaded.data), loaded
    except ValidationError as exc:
        raise SpecError(problems_from(exc, loaded, ())) from None


def problems_from(
    exc: ValidationError, loaded: Loaded | None, prefix: Sequence[str | int]
) -> list[Problem]:
    """Turn pydantic errors into Problems with dotted paths and YAML lines."""
    problems = []
    for error in exc.errors():
        loc = tuple(prefix) + tuple(_loc_part(p) for p in error["loc"])
        line = loaded.line_of(loc) if loaded else None
        problems.append(Problem(format_path(loc), _message(error), line))
    return problems


def _loc_part(part: Any) -> str | int:
    return "if" if part == "if_" else part


def _message(error: Any) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return "unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[:1].lower() + msg[1:]


def format_path(loc: Sequence[str | int]) -> str:
    """``("pipelines", "ci", "steps", 2, "config")`` -> ``pipelines.ci.steps[2].config``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
