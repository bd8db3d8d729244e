"""How much work a template may do: counted operations and a deadline, checked as it runs.

Size limits (:mod:`conveyor.orchestrator.pipeline.templatelimits`) stop a template from
building something huge, but not from looping: two nested ``{% for %}`` over
``range(100000)`` that print nothing build nothing and would run for hours. So every
loop iteration, call, filter, test, lookup and operator of a render ticks a
:class:`Budget`; past ``operations`` ticks, past ``seconds``, past the caller's deadline
(a step's timeout) or once the caller says stop (a cancelled step), the render raises
a TemplateError naming the limit.

Loops are counted by rewriting the syntax tree before it is compiled
(:func:`count_loops`): the iterable of every ``for`` is wrapped so each item ticks,
which also counts the items a loop filter (``for x in y if false``) throws away, and
each iteration of the body ticks once more, which counts recursive loops.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from conveyor.orchestrator.errors import TemplateLimit, TemplateStopped

#: Ticks between two looks at the clock (a look costs more than a tick).
CHECK_EVERY = 128


@dataclass(frozen=True)
class WorkLimits:
    """What one render (or one :func:`bounded` scope) may do."""

    operations: int = 1_000_000
    seconds: float = 2.0


class Budget:
    """The work left to one render, or to every render inside one :func:`bounded` scope."""

    def __init__(
        self,
        limits: WorkLimits,
        *,
        deadline: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.limits = limits
        self.left = limits.operations
        self.ends = time.monotonic() + limits.seconds
        #: The caller's own deadline (``time.monotonic``), e.g. a step's timeout.
        self.deadline = deadline
        self.stop = stop
        #: Weights of the structures renders weighed (templatelimits.weigh), by id.
        self.weights: dict[int, tuple[Any, int]] = {}
        self._countdown = 0  # look at the clock on the first tick

    def tick(self, count: int = 1) -> None:
        """Count ``count`` operations; raise TemplateLimit / TemplateStopped when over."""
        self.left -= count
        self._countdown -= count
        if self._countdown <= 0 or self.left < 0:
            self.check()

    def check(self) -> None:
        """Raise when the budget is spent, the time is up or the caller says stop."""
        self._countdown = CHECK_EVERY
        if self.left < 0:
            raise TemplateLimit(
                f"the template did more than {self.limits.operations} operations "
                "(the limit, CONVEYOR_TEMPLATE_MAX_OPERATIONS); does a loop run too long?"
            )
        now = time.monotonic()
        if (self.deadline is not None and now >= self.deadline) or (self.stop and self.stop()):
            raise TemplateStopped()
        if now >= self.ends:
            raise TemplateLimit(
                f"the template ran longer than {self.limits.seconds:g}s "
                "(the limit, CONVEYOR_TEMPLATE_MAX_SECONDS); does a loop run too long?"
            )


_BUDGET: ContextVar[Budget | None] = ContextVar("conveyor_template_budget", default=None)


def current() -> Budget | None:
    """The budget of the render in progress, if any."""
    return _BUDGET.get()


def tick(count: int = 1) -> None:
    """Count operations against the render in progress (nothing outside a render)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.tick(count)


@contextlib.contextmanager
def bounded(
    limits: WorkLimits,
    *,
    deadline: float | None = None,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Budget]:
    """One budget for every render inside; an enclosing scope's budget is kept instead."""
    outer = _BUDGET.get()
    if outer is not None:
        yield outer
        return
    budget = Budget(limits, deadline=deadline, stop=stop)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """``iterable``, ticking once per item (what a rewritten ``for`` iterates)."""
    budget = _BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.tick()
        yield item


def ticking(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a filter or test), ticking once per call; Jinja's pass_* marks are kept."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.tick()
        return func(*args, **kwargs)

    wrapper.__name__ = getattr(func, "__name__", "filter")
    wrapper.__doc__ = func.__doc__
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    mark = getattr(func, "jinja_pass_arg", None)
    if mark is not None:
        wrapper.jinja_pass_arg = mark  # type: ignore[attr-defined]
    return wrapper


# --- the loop rewrite --------------------------------------------------------------


def _environment_call(name: str, *args: nodes.Node, lineno: int) -> nodes.Call:
    """``environment.<name>(*args)`` as a node (Jinja allows no node types of our own)."""
    call = nodes.EnvironmentAttribute(name)
    return nodes.Call(call, list(args), [], None, None, lineno=lineno)


def count_loops(tree: nodes.Node) -> None:
    """Make every ``for`` of ``tree`` tick its budget (see the module docstring).

    The environment offers ``counted(iterable)`` and ``tick()``."""
    for loop in list(tree.find_all(nodes.For)):
        line = loop.lineno
        loop.iter = _environment_call("counted", loop.iter, lineno=line)
        loop.body = [nodes.ExprStmt(_environment_call("tick", lineno=line)), *loop.body]
