"""Rendering pipeline templates: Jinja2's sandbox, speaking the seed's Go forms too.

Every string in a pipeline may hold a template. :class:`TemplateEngine` translates the
seed's Go-template actions (:mod:`conveyor.orchestrator.pipeline.gotemplate`) to Jinja2, compiles
them once in an immutable sandbox and renders them against the run's context. Undefined
values are errors that name what is missing, and results are bounded: a template cannot
build a string, number or list larger than ``max_output``, and cannot work longer than its
budget (:mod:`conveyor.orchestrator.pipeline.templatework`): every loop iteration, call,
filter and lookup counts, and the clock is read as it goes. Inside :meth:`TemplateEngine.scope`
what a template derives from a secret is tracked
(:mod:`conveyor.orchestrator.pipeline.templatetaint`), so that it can be masked too.

Text headed for a shell is rendered with :meth:`TemplateEngine.render_shell`: values never
enter the command text; each becomes an environment variable that the text quotes.
"""

from __future__ import annotations

import contextlib
import functools
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import ChainableUndefined, Context, StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conveyor.orchestrator.errors import TemplateError
from conveyor.orchestrator.pipeline.gofuncs import functions, helpers, to_json, to_text
from conveyor.orchestrator.pipeline.gotemplate import (
    FUNC_PREFIX,
    ROOT,
    translate,
    translate_expression,
)
from conveyor.orchestrator.pipeline.templatelimits import (
    INTERCEPTED_BINOPS,
    check_binop,
    check_size,
    check_str_call,
    check_weight,
    guard_filters,
    refuse_internals,
    weigh,
)
from conveyor.orchestrator.pipeline.templatetaint import MIN_SECRET_LENGTH, Taint, follow, tracking
from conveyor.orchestrator.pipeline.templatetaint import current as current_taint
from conveyor.orchestrator.pipeline.templatework import (
    WorkLimits,
    bounded,
    count_loops,
    counted,
    ticking,
)
from conveyor.orchestrator.pipeline.templatework import current as current_budget
from conveyor.orchestrator.pipeline.templatework import tick as _tick

__all__ = ["TemplateEngine", "has_template", "translate"]

# What an ``if:`` that renders to text counts as false for (Go prints "<no value>").
_FALSY = frozenset({"", "false", "0", "no", "none", "null", "<no value>"})
_MARKER = re.compile(r"\x00(\d+):(CONVEYOR_VALUE_\d+)\x00")
#: Results of filters and calls that are weighed whole (see templatelimits.weigh).
_WEIGHED = (list, tuple, dict)
_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)[ \t]*(['\"]?)([A-Za-z_]\w*)\2")

# Per-render state the sandbox hooks read: where each container sits in the context
# (for messages like "'steps' has no key 'biuld'"), and the shell call in progress.
_PATHS: ContextVar[dict[int, str] | None] = ContextVar("conveyor_template_paths", default=None)
_SHELL: ContextVar[_ShellCall | None] = ContextVar("conveyor_template_shell", default=None)


def has_template(text: str) -> bool:
    """True when ``text`` has something to render; other strings are used as they are."""
    return "{{" in text or "{%" in text


# --- the sandbox -------------------------------------------------------------------


class _Undefined(ChainableUndefined, StrictUndefined):
    """Fails when used, like StrictUndefined; ``.a.b`` past a missing ``a`` stays undefined
    (naming ``a``), so that ``default`` and ``is defined`` can still look at it."""

    __slots__ = ()


class _CodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` and list, tuple and dict literals to calls the environment can
    measure (Jinja builds them inline)."""

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target: names, not a value
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        """``x[a:b]`` through ``environment.getitem`` too (Jinja slices inline), so that
        a slice counts and a piece of a secret is known to come from it."""
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with bounded operators and Go's map-first lookups."""

    intercepted_binops = INTERCEPTED_BINOPS
    code_generator_class = _CodeGenerator

    def __init__(self, max_output: int, finalize: Callable[..., Any]) -> None:
        super().__init__(
            undefined=_Undefined,
            finalize=finalize,
            keep_trailing_newline=True,  # scripts and YAML blocks end with a newline
            extensions=["jinja2.ext.loopcontrols"],
        )
        self.max_output = max_output
        del self.globals["lipsum"]  # lipsum(10**9) is a bomb and nobody needs it
        go = functions(max_output)
        self.globals.update({**go, **{FUNC_PREFIX + name: f for name, f in go.items()}})
        self.globals.update(helpers())
        self.filters["json"] = to_json
        guard_filters(self.filters, max_output)
        # Every filter and test counts against the budget; a filter's result is derived
        # from a secret when what it was given was.
        self.filters = {name: _following(self, ticking(f)) for name, f in self.filters.items()}
        self.tests = {name: ticking(t) for name, t in self.tests.items()}  # type: ignore[arg-type]

    # The hooks the rewritten loops call (see templatework.count_loops).
    tick = staticmethod(_tick)

    def counted(self, iterable: Any) -> Iterator[Any]:
        """A loop's items, each counted; the items of a secret are derived from it."""
        taint = current_taint()
        if taint is None or not taint.holds(iterable):
            return counted(iterable)
        return (taint.derive(item, fragment=True) for item in counted(iterable))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse ``'a' * 10**9``, ``9**9**9`` and the like before computing them."""
        _tick()
        check_binop(operator, left, right, self.max_output)
        if operator in ("*", "+"):
            self._check_combined(operator, left, right)
        return follow(super().call_binop(context, operator, left, right), left, right)

    def _check_combined(self, operator: str, left: Any, right: Any) -> None:
        """``[xs] * n`` and ``xs + ys`` weighed whole, nested parts included."""
        sequences = (list, tuple)
        if operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
            check_weight(self.weight(left) + self.weight(right), self.max_output)
        elif operator == "*" and (isinstance(left, sequences) or isinstance(right, sequences)):
            count, repeated = (left, right) if isinstance(right, sequences) else (right, left)
            if isinstance(count, int) and count > 0:
                check_weight(self.weight(repeated) * count, self.max_output)

    def weight(self, value: Any) -> int:
        """How big ``value`` is as a whole (templatelimits.weigh), remembered per budget."""
        budget = current_budget()
        known = budget.weights if budget is not None else {}
        return weigh(value, self.max_output, known)

    def built(self, value: Any) -> Any:
        """A list, tuple or dict a template built: refused when too big as a whole."""
        self.weight(value)
        return value

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Refuse str methods that would build too much (``s.center(10**9)``)."""
        _tick()
        owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            args = check_str_call(owner, name, args, kwargs, self.max_output)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, _WEIGHED):
            self.weight(result)
        return follow(result, owner, *args, *kwargs.values())

    def concat_checked(self, parts: Sequence[Any]) -> str:
        """``a ~ b ~ c``, refused when the result is too long."""
        _tick()
        texts = [to_text(part) for part in parts]
        check_size(sum(map(len, texts)), self.max_output)
        joined = "".join(texts)
        follow(joined, *texts)
        return joined

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``x.name``: a mapping's key first, as Go reads it (``steps.x.items``)."""
        _tick()
        if isinstance(obj, Mapping) and attribute in obj:
            return self._found(obj, attribute, obj[attribute])
        return self._found(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``x[key]`` and ``index x key``."""
        _tick()
        value = self._found(obj, argument, super().getitem(obj, argument))
        if isinstance(argument, slice):  # a part of a secret is derived from it
            follow(value, obj)
        return value

    def _found(self, obj: Any, key: Any, value: Any) -> Any:
        paths = _PATHS.get()
        if isinstance(value, Undefined):
            # A plain miss has no hint yet (unsafe attributes have theirs): name the key.
            if value._undefined_hint is None and not isinstance(obj, Undefined):
                return self.undefined(hint=_missing(obj, key, paths), obj=obj, name=key)
        elif paths is not None and isinstance(value, Mapping | list | tuple):
            owner = paths.get(id(obj))
            if owner is not None:
                paths.setdefault(id(value), f"{owner}.{key}" if owner else str(key))
        return value


def _following(env: _Environment, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a filter), its result derived from a secret when its arguments were, and
    refused when it is a structure too big as a whole (``xs | list`` of nested lists)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        if isinstance(result, _WEIGHED):
            env.weight(result)
        return follow(result, *args, *kwargs.values())

    functools.update_wrapper(wrapper, func)  # keeps jinja_pass_arg: Jinja still passes it
    return wrapper


def _printed(value: Any) -> str:
    """The text of a printed value; derived (and noted as printed) when ``value`` was."""
    text = to_text(value)
    taint = current_taint()
    if taint is not None and taint.printed(value, text):
        taint.derive(text)
    return text


def _missing(obj: Any, key: Any, paths: dict[int, str] | None) -> str:
    owner = (paths or {}).get(id(obj))
    label = "the context" if owner == "" else repr(owner) if owner else type(obj).__name__
    if isinstance(obj, Mapping):
        keys = sorted(map(str, obj))
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        return f"{label} has no key {key!r} (it has: {shown or 'nothing'})"
    if isinstance(obj, list | tuple):
        return f"{label} has no item {key!r} (it has {len(obj)} items)"
    return f"{label} has no attribute {key!r}"


# --- shell text --------------------------------------------------------------------


@dataclass
class _ShellCall:
    """The values one :meth:`TemplateEngine.render_shell` call has set aside."""

    values: dict[str, str]
    nonce: str

    def unmark(self, match: re.Match[str]) -> str:
        return self.values[match.group(2)] if match.group(1) == self.nonce else match.group()


@jinja2.pass_context
def _shell_finalize(context: Context, value: Any) -> str:
    """Set a printed value aside as a variable and print a marker where it goes."""
    call = _SHELL.get()
    if call is None:
        raise RuntimeError("shell templates render only through render_shell")
    text = _MARKER.sub(call.unmark, _printed(value))  # built from values printed before
    number = len(call.values) + 1
    while f"CONVEYOR_VALUE_{number}" in call.values:
        number += 1
    call.values[f"CONVEYOR_VALUE_{number}"] = text
    return f"\x00{call.nonce}:CONVEYOR_VALUE_{number}\x00"


class _ShellQuotes:
    """Which quoting a POSIX shell is in at a point of a script, scanning forwards.

    Knows '…', "…", backslashes, # comments and here-documents: enough to put each value
    where the shell expands it exactly once, as one word."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.state = text, 0, ""
        self.heredoc: tuple[str, int] | None = None  # (state, end) from << to the newline
        self.until = 0

    def state_at(self, end: int) -> str:
        """The quoting at offset ``end``: "", "'", '"', "<<" or "<<'" (quoted delimiter)."""
        while self.pos < end:
            if self.state.startswith("<<"):
                if end < self.until:
                    return self.state
                self.pos, self.state = self.until, ""
                continue
            self.pos = self._step(self.text[self.pos], self.pos)
        return self.state

    def _step(self, char: str, pos: int) -> int:
        if self.state == "'" or (self.state == '"' and char == '"'):
            self.state = "" if char == self.state else self.state
            return pos + 1
        if char == "\\":
            return pos + 2
        if self.state == '"':
            return pos + 1
        if char in "'\"":
            self.state = char
        elif char == "#" and (pos == 0 or self.text[pos - 1] in " \t\n;&|()"):
            end = self.text.find("\n", pos)
            return len(self.text) if end < 0 else end
        elif char == "\n" and self.heredoc is not None:
            (self.state, self.until), self.heredoc = self.heredoc, None
        elif char == "<" and (match := _HEREDOC.match(self.text, pos)):
            self.heredoc = ("<<'" if match.group(2) else "<<", self._heredoc_end(match))
            return match.end()
        return pos + 1

    def _heredoc_end(self, match: re.Match[str]) -> int:
        tabs = "\t*" if match.group(1) else ""
        terminator = re.compile(rf"^{tabs}{re.escape(match.group(3))}$", re.MULTILINE)
        body = self.text.find("\n", match.end())
        found = terminator.search(self.text, body + 1) if body >= 0 else None
        return found.end() if found else len(self.text)


def _place(text: str, call: _ShellCall) -> str:
    """Replace the markers with ``$NAME`` references quoted for where each one stands."""
    quotes = _ShellQuotes(text)

    def reference(match: re.Match[str]) -> str:
        if match.group(1) != call.nonce:
            return match.group()
        name, state = match.group(2), quotes.state_at(match.start())
        if state == "<<'":
            raise TemplateError("a value cannot go into a here-document with a quoted delimiter")
        if state == "'":
            return f"'\"${name}\"'"  # close the single quotes, expand, reopen
        return f'"${name}"' if state == "" else f"${{{name}}}"

    placed = _MARKER.sub(reference, text)
    if "\x00" in placed:
        raise TemplateError("a printed value was changed afterwards; print values directly")
    return placed


# --- the engine --------------------------------------------------------------------


@contextlib.contextmanager
def _errors(text: str) -> Iterator[None]:
    """Turn whatever a template raises into a one-line TemplateError."""
    try:
        yield
    except TemplateError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        where = f"line {exc.lineno}: " if "\n" in text.strip() else ""
        raise TemplateError(f"{where}{exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed: {_one_line(exc)}") from None
    except RecursionError:
        raise TemplateError("the template recurses too deeply") from None
    except Exception as exc:  # anything a sandboxed expression raises is the template's
        raise TemplateError(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class TemplateEngine:
    """Checks, renders and evaluates pipeline templates; compiled templates are cached."""

    def __init__(
        self,
        *,
        max_output: int = 1_048_576,
        max_operations: int = 1_000_000,
        max_seconds: float = 2.0,
    ) -> None:
        self.max_output = max_output
        self.work = WorkLimits(max_operations, max_seconds)
        self._env = _Environment(max_output, _printed)
        self._shell_env = _Environment(max_output, _shell_finalize)
        self._template = functools.lru_cache(maxsize=4096)(self._compile)
        self._expression = functools.lru_cache(maxsize=4096)(self._compile_expression)

    @contextlib.contextmanager
    def scope(
        self,
        *,
        secrets: Iterable[str] = (),
        deadline: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Taint]:
        """Renders inside share one work budget, stopped also at ``deadline``
        (``time.monotonic``) or once ``stop()`` is true; what they derive from
        ``secrets`` is collected in the ``Taint`` this yields (``derived``)."""
        with (
            bounded(self.work, deadline=deadline, stop=stop),
            tracking(secrets, MIN_SECRET_LENGTH) as taint,
        ):
            yield taint

    def check(self, text: str) -> None:
        """Compile ``text`` without rendering it; raise TemplateError if it is invalid."""
        if has_template(text):
            self._template(False, text)

    def render(self, text: str, context: Mapping[str, Any]) -> str:
        """``text`` with its templates rendered against ``context``."""
        if not has_template(text):
            return text
        return self._render(False, text, context)

    def render_shell(self, text: str, context: Mapping[str, Any], values: dict[str, str]) -> str:
        """Render shell text: each printed value goes into ``values`` as CONVEYOR_VALUE_<n>
        and the text references it quoted, so no value is ever parsed by the shell."""
        if not has_template(text):
            return text
        call = _ShellCall(dict(values), str(secrets.randbelow(10**12)))
        token = _SHELL.set(call)
        try:
            rendered = self._render(True, text, context)
        finally:
            _SHELL.reset(token)
        placed = _place(rendered, call)
        values.update(call.values)
        return placed

    def evaluate(self, condition: str, context: Mapping[str, Any]) -> bool:
        """Decide a step's ``if:``/``skip_if:``, written as a template or an expression."""
        if has_template(condition):
            return self.render(condition, context).strip().lower() not in _FALSY
        expression = self._expression(condition)
        with bounded(self.work), _errors(condition), _scope(context) as variables:
            return bool(expression(variables))

    def render_value(
        self,
        value: Any,
        context: Mapping[str, Any],
        *,
        shell: bool = False,
        values: dict[str, str] | None = None,
    ) -> Any:
        """Render every string inside ``value`` (dicts and lists are walked)."""
        if isinstance(value, str):
            if not shell:
                return self.render(value, context)
            if values is None:
                raise ValueError("render_value(shell=True) needs a values dict")
            return self.render_shell(value, context, values)
        if isinstance(value, Mapping):
            return {
                k: self.render_value(v, context, shell=shell, values=values)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.render_value(v, context, shell=shell, values=values) for v in value]
        return value

    def _compile(self, shell: bool, text: str) -> jinja2.Template:
        env = self._shell_env if shell else self._env
        with bounded(self.work), _errors(text):  # constant folding runs filters
            tree = env.parse(translate(text))
            refuse_internals(tree)
            count_loops(tree)
            return env.from_string(tree)

    def _compile_expression(self, condition: str) -> Callable[..., Any]:
        with bounded(self.work), _errors(condition):
            source = translate_expression(condition)
            expression = self._env.compile_expression(source, undefined_to_none=False)
            refuse_internals(Parser(self._env, source, state="variable").parse_expression())
            return expression

    def _render(self, shell: bool, text: str, context: Mapping[str, Any]) -> str:
        template = self._template(shell, text)
        taint = current_taint()
        pieces = taint.pieces_printed if taint is not None else 0
        with bounded(self.work), _errors(text), _scope(context) as variables:
            rendered = self._collect(template.generate(variables))
        # A printed value long enough to mask is masked wherever it appears; a render that
        # printed pieces too short for that (a secret character by character) is masked whole.
        if taint is not None and taint.pieces_printed > pieces and not shell:
            taint.derive(rendered)
        return rendered

    def _collect(self, chunks: Iterable[str]) -> str:
        out, length = [], 0
        for chunk in chunks:
            length += len(chunk)
            if length > self.max_output:
                raise TemplateError(
                    f"the rendered text is longer than the limit of {self.max_output} characters"
                )
            out.append(chunk)
        return "".join(out)


@contextlib.contextmanager
def _scope(context: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The variables of one render, with the lookup paths the error messages use."""
    paths = {id(v): str(k) for k, v in context.items() if isinstance(v, Mapping | list | tuple)}
    paths[id(context)] = ""
    token = _PATHS.set(paths)
    try:
        yield {**context, ROOT: context}
    finally:
        _PATHS.reset(token)
