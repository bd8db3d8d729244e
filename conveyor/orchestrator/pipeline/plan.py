"""Compile a pipeline spec into an immutable execution plan (a DAG of steps).

Compilation is where every check that needs no running happens: step types exist, each
config fits its type's model (values that are templates are checked when rendered),
templates parse, ``needs`` name real steps and form no cycle, matrices expand, limits
hold. Workers only ever see the plan, never YAML.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.orchestrator.errors import Problem, SpecError, TemplateError
from conveyor.orchestrator.pipeline.spec import (
    OnError,
    PipelineFile,
    PipelineSpec,
    RetrySpec,
    StepSpec,
    format_path,
    parse,
)
from conveyor.orchestrator.pipeline.spec import problems_from as _problems_from
from conveyor.orchestrator.pipeline.templates import TemplateEngine, has_template
from conveyor.orchestrator.pipeline.yamlload import Loaded
from conveyor.orchestrator.queues import CONTROL
from conveyor.orchestrator.settings import Settings

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import StepType

_RUNS_ON_FAILURE = re.compile(r"\b(always|failure)\s*\(")


class PlanStep(BaseModel):
    """One step of a compiled plan: a node of the DAG."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key: str
    name: str
    type: str
    config: dict[str, Any]
    needs: tuple[str, ...]
    if_: str | None = Field(default=None, alias="if")
    skip_if: str | None = None
    timeout: float | None = None
    on_error: OnError = "stop"
    retry: RetrySpec = Field(default_factory=RetrySpec)
    queue: str
    matrix: dict[str, Any] = Field(default_factory=dict)
    #: The step type is brief (see ``StepType``): such steps of a run are coalesced.
    brief: bool = False

    @property
    def runs_on_failure(self) -> bool:
        """True when the step's ``if`` asks to run after failures (``always()``/``failure()``)."""
        return bool(self.if_ and _RUNS_ON_FAILURE.search(self.if_))


class ExecutionPlan(BaseModel):
    """An immutable, validated pipeline: what a run executes."""

    model_config = ConfigDict(frozen=True)

    pipeline: str
    description: str | None = None
    timeout: float | None = None
    env: dict[str, str] = Field(default_factory=dict)
    steps: tuple[PlanStep, ...]
    #: SHA-256 of the run's source archive (``conveyor submit --source``), set on the
    #: run's copy of the plan when it was given one: workers unpack it into the workspace.
    workspace_source: str | None = None

    @cached_property
    def by_key(self) -> dict[str, PlanStep]:
        """Steps by key."""
        return {s.key: s for s in self.steps}

    @cached_property
    def brief_types(self) -> list[str]:
        """The step types of the plan's brief steps, sorted."""
        return sorted({s.type for s in self.steps if s.brief})

    def step(self, key: str) -> PlanStep:
        """One step by key."""
        return self.by_key[key]

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        """For each step, the steps that need it, in plan order."""
        found: dict[str, list[str]] = {s.key: [] for s in self.steps}
        for step in self.steps:
            for need in step.needs:
                found[need].append(step.key)
        return {k: tuple(v) for k, v in found.items()}


@dataclass
class Compiled:
    """The result of compiling a file: plans by pipeline name, the source and warnings."""

    source: str
    plans: dict[str, ExecutionPlan]
    warnings: list[str] = field(default_factory=list)

    def select(self, name: str | None) -> ExecutionPlan:
        """The pipeline called ``name``, or the only one when ``name`` is None."""
        if name is None and len(self.plans) == 1:
            return next(iter(self.plans.values()))
        if name in self.plans:
            return self.plans[name]
        names = ", ".join(sorted(self.plans))
        if name is None:
            raise SpecError(f"the file has several pipelines ({names}): choose one with --pipeline")
        raise SpecError(f"no pipeline {name!r} in the file (it has: {names})")


@dataclass
class Limits:
    """Bounds on what one file may ask for."""

    max_bytes: int = 1_048_576
    max_nodes: int = 200_000
    max_steps: int = 1000
    max_matrix: int = 256


class Compiler:
    """Compiles pipeline files against the registered step types."""

    def __init__(
        self,
        step_types: Mapping[str, StepType],
        templates: TemplateEngine,
        limits: Limits | None = None,
    ) -> None:
        self.step_types = step_types
        self.templates = templates
        self.limits = limits or Limits()

    @classmethod
    def for_settings(cls, settings: Settings, step_types: Mapping[str, StepType]) -> Compiler:
        """A compiler bound to ``step_types`` and the settings' limits."""
        limits = Limits(
            max_bytes=settings.max_definition_bytes,
            max_nodes=settings.max_yaml_nodes,
            max_steps=settings.max_steps,
            max_matrix=settings.max_matrix,
        )
        templates = TemplateEngine(
            max_output=settings.max_template_output,
            max_operations=settings.template_max_operations,
            max_seconds=settings.template_max_seconds,
        )
        return cls(step_types, templates, limits)

    def compile(self, text: str | bytes) -> Compiled:
        """Compile every pipeline of a file; raise SpecError listing every problem."""
        spec, loaded = parse(text, max_bytes=self.limits.max_bytes, max_nodes=self.limits.max_nodes)
        source = text.decode() if isinstance(text, bytes) else text
        problems: list[Problem] = []
        plans = {}
        for name, pipeline in spec.pipelines.items():
            ctx = _Ctx(loaded, ("pipelines", name), problems)
            plan = self._pipeline(name, pipeline, ctx)
            if plan is not None:
                plans[name] = plan
        if problems:
            raise SpecError(problems)
        return Compiled(source, plans, _warnings(spec))

    def _pipeline(self, name: str, spec: PipelineSpec, ctx: _Ctx) -> ExecutionPlan | None:
        for key, value in spec.env.items():
            self._check_template(value, ctx.at("env", key))
        expanded = self._expand_all(spec, ctx)
        if len(expanded) > self.limits.max_steps:
            ctx.add((), f"{len(expanded)} steps; the limit is {self.limits.max_steps}")
            return None
        steps = self._link(spec, expanded, ctx)
        if ctx.failed:
            return None
        ordered = _toposort(steps, ctx.at("steps"))
        if ordered is None:
            return None
        return ExecutionPlan(
            pipeline=name,
            description=spec.description,
            timeout=spec.timeout,
            env=spec.env,
            steps=tuple(ordered),
        )

    def _expand_all(
        self, spec: PipelineSpec, ctx: _Ctx
    ) -> list[tuple[int, StepSpec, str, dict[str, Any]]]:
        seen: set[str] = set()
        out = []
        for index, step in enumerate(spec.steps):
            here = ctx.at("steps", index)
            if step.name in seen:
                here.add(("name",), f"duplicate step name {step.name!r}")
            seen.add(step.name)
            self._check_step(step, here)
            for key, matrix in _expand_matrix(step, here, self.limits.max_matrix):
                out.append((index, step, key, matrix))
        return out

    def _check_step(self, step: StepSpec, ctx: _Ctx) -> None:
        step_type = self.step_types.get(step.type)
        if step_type is None:
            known = ", ".join(sorted(self.step_types))
            ctx.add(("type",), f"unknown step type {step.type!r} (known: {known})")
        else:
            self._check_config(step_type, step.config, ctx.at("config"))
        for field_name in ("if_", "skip_if"):
            value = getattr(step, field_name)
            if isinstance(value, str):
                self._check_template(value, ctx.at(field_name.rstrip("_")), expression=True)
        _walk_strings(step.config, ctx.at("config"), self._check_template)

    def _check_config(self, step_type: StepType, config: dict[str, Any], ctx: _Ctx) -> None:
        try:
            step_type.Config.model_validate(config)
        except ValidationError as exc:
            for problem, error in zip(
                _problems_from(exc, ctx.loaded, ctx.path), exc.errors(), strict=True
            ):
                if not _touches_template(config, error["loc"]):
                    ctx.problems.append(problem)

    def _check_template(self, text: str, ctx: _Ctx, expression: bool = False) -> None:
        if not expression and not has_template(text):
            return
        try:
            self.templates.check(text if has_template(text) or not expression else _as_expr(text))
        except TemplateError as exc:
            ctx.add((), f"template error: {exc.message}")

    def _link(
        self,
        spec: PipelineSpec,
        expanded: list[tuple[int, StepSpec, str, dict[str, Any]]],
        ctx: _Ctx,
    ) -> list[PlanStep]:
        keys_of: dict[str, list[str]] = {}
        for _, step, key, _ in expanded:
            keys_of.setdefault(step.name, []).append(key)
        out = []
        for index, step, key, matrix in expanded:
            needs = self._needs(spec, index, step, keys_of, ctx.at("steps", index, "needs"))
            out.append(self._plan_step(spec, step, key, matrix, needs))
        return out

    def _needs(
        self,
        spec: PipelineSpec,
        index: int,
        step: StepSpec,
        keys_of: dict[str, list[str]],
        ctx: _Ctx,
    ) -> tuple[str, ...]:
        if step.needs is None:  # the seed's order: after the previous step in the file
            return tuple(keys_of.get(spec.steps[index - 1].name, [])) if index else ()
        needs: list[str] = []
        for i, name in enumerate(step.needs):
            if name not in keys_of:
                known = ", ".join(keys_of)
                ctx.add((i,), f"unknown step {name!r} (steps are: {known})")
            else:
                needs.extend(keys_of[name])
        return tuple(needs)

    def _plan_step(
        self,
        spec: PipelineSpec,
        step: StepSpec,
        key: str,
        matrix: dict[str, Any],
        needs: tuple[str, ...],
    ) -> PlanStep:
        step_type = self.step_types.get(step.type)
        return PlanStep(
            key=key,
            name=step.name,
            type=step.type,
            config=step.config,
            needs=needs,
            if_=_condition(step.if_),
            skip_if=_condition(step.skip_if),
            timeout=step.timeout,
            on_error=step.on_error or spec.on_error,
            retry=step.retry or RetrySpec(),
            queue=step.queue or (step_type.queue if step_type else CONTROL),
            matrix=matrix,
            brief=bool(getattr(step_type, "brief", False)),
        )


@dataclass
class _Ctx:
    """Where in the file we are, and where problems go."""

    loaded: Loaded
    path: tuple[str | int, ...]
    problems: list[Problem]

    def at(self, *parts: str | int) -> _Ctx:
        return _Ctx(self.loaded, self.path + parts, self.problems)

    def add(self, parts: tuple[str | int, ...], message: str) -> None:
        path = self.path + parts
        self.problems.append(Problem(format_path(path), message, self.loaded.line_of(path)))

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def _condition(value: str | bool | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _as_expr(text: str) -> str:
    """A bare condition checked as a template expression."""
    return "{{ " + text + " }}"


def _warnings(spec: PipelineFile) -> list[str]:
    return [
        f"top-level key `{key}` describes the seed engine's modules and is ignored by Conveyor"
        for key in spec.ignored_keys()
    ]


def _walk_strings(value: Any, ctx: _Ctx, visit: Any) -> None:
    if isinstance(value, str):
        visit(value, ctx)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_strings(item, ctx.at(str(key)), visit)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk_strings(item, ctx.at(index), visit)


def _touches_template(config: Any, loc: tuple[Any, ...]) -> bool:
    """True when the value at ``loc`` (or one above it) is a template string."""
    node = config
    for part in loc:
        if isinstance(node, str):
            break
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, str) and has_template(node)


def _expand_matrix(step: StepSpec, ctx: _Ctx, limit: int) -> list[tuple[str, dict[str, Any]]]:
    if not step.matrix:
        return [(step.name, {})]
    matrix = dict(step.matrix)
    include, exclude = matrix.pop("include", []) or [], matrix.pop("exclude", []) or []
    for axis, values in matrix.items():
        if (
            not isinstance(values, list)
            or not values
            or any(isinstance(v, dict | list) for v in values)
        ):
            ctx.add(("matrix", axis), "a matrix axis is a non-empty list of plain values")
            return []
    combos = [dict(zip(matrix, c, strict=True)) for c in itertools.product(*matrix.values())]
    combos = [c for c in combos if not any(_matches(c, e) for e in exclude)]
    combos += [dict(i) for i in include if isinstance(i, dict)]
    if len(combos) > limit:
        ctx.add(("matrix",), f"expands to {len(combos)} steps; the limit is {limit}")
        return []
    if not combos:
        ctx.add(("matrix",), "expands to no step at all")
    return [(f"{step.name}[{_matrix_label(c)}]", c) for c in combos]


def _matches(combo: dict[str, Any], pattern: Any) -> bool:
    return isinstance(pattern, dict) and all(combo.get(k) == v for k, v in pattern.items())


def _matrix_label(combo: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in combo.items())


def _toposort(steps: list[PlanStep], ctx: _Ctx) -> list[PlanStep] | None:
    """Order steps so every step follows its needs (stable by file order); reject cycles."""
    by_key = {s.key: s for s in steps}
    indegree = {s.key: len(s.needs) for s in steps}
    dependents: dict[str, list[str]] = {s.key: [] for s in steps}
    for s in steps:
        for need in s.needs:
            dependents[need].append(s.key)
    position = {s.key: i for i, s in enumerate(steps)}
    ready = sorted((k for k, d in indegree.items() if d == 0), key=position.__getitem__)
    ordered: list[PlanStep] = []
    while ready:
        key = ready.pop(0)
        ordered.append(by_key[key])
        for dep in dependents[key]:
            indegree[dep] -= 1
            if indegree[dep] == 0:
                ready.append(dep)
                ready.sort(key=position.__getitem__)
    if len(ordered) == len(steps):
        return ordered
    cycle = _find_cycle({k: by_key[k].needs for k, d in indegree.items() if d > 0})
    ctx.add((), "`needs` form a cycle: " + " -> ".join(cycle))
    return None


def _find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str]:
    start = next(iter(graph))
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = next(n for n in graph[node] if n in graph)
    return [*path[path.index(node) :], node]
