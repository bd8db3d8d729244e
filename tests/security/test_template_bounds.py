"""Hostile templates: work that prints nothing, bombs, recursion; in Jinja and Go forms.

Each template here would run for hours (or build gigabytes) if rendering were not
bounded. The contract: it stops, soon, with a one-line TemplateError that names the
limit it hit. Every render runs on a thread of its own and the test waits a bounded
time for its outcome, so a template that is not stopped fails the test rather than
hanging it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from conveyor.orchestrator.errors import TemplateError, TemplateLimit, TemplateStopped
from conveyor.orchestrator.pipeline.templates import TemplateEngine

#: How long a test waits for a render to end: far above any limit used here.
PATIENCE = 60.0
BIG = list(range(100_000))

RUNAWAY_LOOPS = {
    # Jinja: nested loops over huge ranges that print nothing
    "jinja nested ranges": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "jinja nested loops over a list built once": (
        "{% set xs = range(100000) | list %}"
        "{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}"
    ),
    "jinja nested loops over a list variable": (
        "{% for a in big %}{% for b in big %}{% endfor %}{% endfor %}"
    ),
    "jinja loops whose filter drops every item": (
        "{% for a in range(100000) %}{% for b in range(100000) if false %}{% endfor %}{% endfor %}"
    ),
    "jinja recursive loop": (
        "{% for a in range(100000) recursive %}{{ loop(range(100000)) if false }}"
        "{% for b in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "jinja macro recursion that doubles": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    ),
    "jinja filters in a loop": ("{% for a in range(100000) %}{% set s = big | sum %}{% endfor %}"),
    # Go forms
    "go nested ranges over a number": "{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}",
    "go nested ranges over a list variable": (
        "{{ range $a := .big }}{{ range $b := $.big }}{{ end }}{{ end }}"
    ),
    "go nested ranges with index and value": (
        "{{ range $i, $a := .big }}{{ range $j, $b := $.big }}{{ end }}{{ end }}"
    ),
    "go if inside nested ranges": (
        "{{ range $a := .big }}{{ range $b := $.big }}{{ if eq $a -1 }}x{{ end }}{{ end }}{{ end }}"
    ),
}

BOMBS = {
    "huge integer": "{{ 10 ** (10 ** 8) }}",
    "huge integer by product": "{{ (10 ** 4000) * (10 ** 4000) * (10 ** 4000) * (10 ** 4000) }}",
    "string repetition": "{{ 'a' * 10 ** 9 }}",
    "list repetition": "{{ ([0] * 10 ** 9) | length }}",
    "huge range": "{{ range(10 ** 9) | length }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "percent format width": "{{ '%999999999d' | format(1) }}",
    "go printf width": '{{ printf "%0999999999d" 1 }}',
    "go range over a huge number": "{{ range 1000000000 }}{{ end }}",
    "str method width": "{{ 'a'.center(10 ** 9) }}",
}


def _outcome(call: Callable[[], Any]) -> BaseException | Any:
    """What ``call`` returned or raised, waiting at most PATIENCE seconds for it."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)  # a runaway must not hold pytest
    thread.start()
    thread.join(PATIENCE)
    if thread.is_alive():
        pytest.fail(f"the template was still rendering after {PATIENCE}s: it is not bounded")
    return box[0]


def _render(engine: TemplateEngine, text: str, context: Mapping[str, Any] | None = None) -> Any:
    return _outcome(lambda: engine.render(text, {"big": BIG, **(context or {})}))


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()  # the default limits


@pytest.mark.parametrize("text", list(RUNAWAY_LOOPS.values()), ids=list(RUNAWAY_LOOPS))
def test_a_template_that_loops_without_printing_stops_naming_its_limit(
    engine: TemplateEngine, text: str
) -> None:
    # Given a template whose loops would run about ten billion times, printing nothing
    # When it is rendered
    error = _render(engine, text)

    # Then it stops with a template error that names the limit
    assert isinstance(error, TemplateLimit), error
    assert "CONVEYOR_TEMPLATE_MAX_" in error.message
    assert "\n" not in error.message


@pytest.mark.parametrize("text", list(BOMBS.values()), ids=list(BOMBS))
def test_bombs_are_refused_before_they_are_built(engine: TemplateEngine, text: str) -> None:
    # Given a template that would build a gigantic number, string or list
    # When it is rendered
    error = _render(engine, text)

    # Then it is a template error, not a memory blow-up
    assert isinstance(error, TemplateError), error
    assert "\n" not in error.message


def test_the_operation_budget_is_a_setting() -> None:
    # Given an engine allowing only a few thousand operations
    small = TemplateEngine(max_operations=5_000)

    # Then a loop of 1,000 passes and one of 10,000 is stopped, naming the limit
    assert _render(small, "{% for a in range(1000) %}{% endfor %}ok") == "ok"
    error = _render(small, "{% for a in range(10000) %}{% endfor %}ok")
    assert isinstance(error, TemplateLimit)
    assert "5000 operations" in error.message


def test_the_time_limit_stops_work_the_operation_budget_allows() -> None:
    # Given an engine whose operation budget is practically unlimited, and half a second
    slow = TemplateEngine(max_operations=10**12, max_seconds=0.5)

    # When a runaway loop renders, Then the clock stops it, naming the time limit
    error = _render(slow, RUNAWAY_LOOPS["jinja nested ranges"])
    assert isinstance(error, TemplateLimit)
    assert "longer than 0.5s" in error.message
    assert "CONVEYOR_TEMPLATE_MAX_SECONDS" in error.message


def test_a_scope_deadline_and_a_stop_request_end_rendering() -> None:
    # Given generous limits, but a caller (a step) with a deadline or cancelled meanwhile
    lax = TemplateEngine(max_operations=10**12, max_seconds=3600)
    runaway = RUNAWAY_LOOPS["go nested ranges over a number"]

    def with_deadline() -> Any:
        with lax.scope(deadline=time.monotonic() + 0.3):
            return lax.render(runaway, {})

    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()

    def with_stop() -> Any:
        with lax.scope(stop=cancelled.is_set):
            return lax.render(runaway, {})

    # Then each render is stopped for its caller
    assert isinstance(_outcome(with_deadline), TemplateStopped)
    assert isinstance(_outcome(with_stop), TemplateStopped)


def test_renders_inside_one_scope_share_one_budget() -> None:
    # Given an engine allowing 5,000 operations and templates of 1,000 loop passes each
    small = TemplateEngine(max_operations=5_000)
    text = "{% for a in range(1000) %}{% endfor %}ok"

    # When three render in one scope (a step's config fields)
    def three() -> Any:
        with small.scope():
            return [small.render(text, {}) for _ in range(3)]

    # Then the third is refused: the scope's budget is spent, not renewed per string
    assert isinstance(_outcome(three), TemplateLimit)
    assert _outcome(lambda: [small.render(text, {}) for _ in range(3)]) == ["ok"] * 3


@pytest.mark.parametrize(
    "condition",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}true",
        "{{ range $a := .big }}{{ range $b := $.big }}{{ end }}{{ end }}true",
    ],
    ids=["jinja", "go"],
)
def test_a_runaway_condition_stops_too(engine: TemplateEngine, condition: str) -> None:
    # Given an `if:` that loops without printing, When it is evaluated
    error = _outcome(lambda: engine.evaluate(condition, {"big": BIG}))

    # Then it is a template error naming the limit
    assert isinstance(error, TemplateLimit), error


def test_ordinary_templates_still_render(engine: TemplateEngine) -> None:
    # Given the loops and calls real pipelines use, Then they render as before
    text = (
        "{% for t in tags %}{{ t | upper }}{% if not loop.last %},{% endif %}{% endfor %} "
        "{{ range $i, $t := .tags }}{{ $i }}={{ $t }};{{ end }} {{ items[1:] }} "
        "{% for x in range(3) recursive %}{{ x }}{% endfor %}"
    )
    context = {"tags": ["a", "b"], "items": [1, 2, 3]}
    assert engine.render(text, context) == "A,B 0=a;1=b; [2,3] 012"


#: Structures whose parts are shared: cheap to build (a few references), huge as a whole,
#: so that printing, serialising or comparing them runs for hours in one operation.
SHARED_PARTS = {
    "nested list literals": (
        "{% set a = range(100000) | list %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ c | tojson | length }}"
    ),
    "nested tuple literals": (
        "{% set a = range(100000) | list %}{% set b = (a, a, a, a, a, a, a, a, a, a) %}"
        "{% set c = (b, b, b, b, b, b, b, b, b, b) %}{{ c | tojson | length }}"
    ),
    "nested dict literals": (
        "{% set a = range(100000) | list %}"
        "{% set b = {'1': a, '2': a, '3': a, '4': a, '5': a, '6': a, '7': a, '8': a} %}"
        "{% set c = {'1': b, '2': b, '3': b, '4': b, '5': b, '6': b, '7': b, '8': b} %}"
        "{{ c | tojson | length }}"
    ),
    "a list of lists repeated": "{% set b = [range(100000) | list] * 100 %}{{ b | length }}",
    "lists of lists added": (
        "{% set b = [range(100000) | list] %}{% set c = b + b + b + b + b + b + b + b + b + b %}"
        "{% set d = c + c + c + c + c + c + c + c + c + c %}{{ d | tojson | length }}"
    ),
    "strings shared in nested lists": (
        "{% set s = 'x' * 100000 %}{% set b = [s, s, s, s, s, s, s, s, s, s] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ c | tojson | length }}"
    ),
    "a comparison of shared structures": (
        "{% set b = [range(100000) | list] * 1000 %}{% set c = [range(100000) | list] * 1000 %}"
        "{{ b == c }}"
    ),
    "a filter's result of shared parts": (
        "{% set a = range(100000) | list %}{{ ([1] | batch(12, a) | list) | tojson | length }}"
    ),
}


@pytest.mark.parametrize("text", list(SHARED_PARTS.values()), ids=list(SHARED_PARTS))
def test_structures_are_bounded_as_a_whole_shared_parts_included(
    engine: TemplateEngine, text: str
) -> None:
    # Given a template that builds a structure from shared parts, a few references each
    # but far more than the output limit as a whole
    # When it is rendered
    started = time.monotonic()
    error = _render(engine, text)

    # Then it is refused while it is being built, not serialised or compared for minutes
    assert isinstance(error, TemplateError), error
    assert "\n" not in error.message
    assert time.monotonic() - started < 10


def test_structures_within_the_limit_still_render(engine: TemplateEngine) -> None:
    # Given templates that build lists, tuples and dicts of ordinary sizes, some shared
    text = (
        "{% set a = range(1000) | list %}{% set b = [a, a, a] %}{% set d = {'a': a, 'b': b} %}"
        "{{ (b + [a]) | length }} {{ ([a] * 10) | length }} {{ d | tojson | length }} "
        "{{ (big | list) | length }} {{ [big] | length }} {% for x, y in [(1, 2)] %}{{ y }}"
        "{% endfor %}"
    )

    # Then they render as before
    assert _render(engine, text) == "4 10 19580 100000 1 2"
