"""Rendering pipeline templates: Jinja2's sandbox, speaking the seed's Go forms too.

Every string in a pipeline may hold a template. :class:`TemplateEngine` translates the
seed's Go-template actions (:mod:`conveyor.orchestrator.pipeline.gotemplate`) to Jinja2, compiles
them once in an immutable sandbox and renders them against the run's context. Undefined
values are errors that name what is missing, and results are bounded: a template cannot
build a string, number or list larger than ``max_output``.

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
    guard_filters,
    refuse_internals,
)

__all__ = ["TemplateEngine", "has_template", "translate"]

# What an ``if:`` that renders to text counts as false for (Go prints "<no value>").
_FALSY = frozenset({"", "false", "0", "no", "none", "null", "<no value>"})
_MARKER = re.compile(r"\x00(\d+):(CONVEYOR_VALUE_\d+)\x00")
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
    """Compiles ``a ~ b`` to a call the environment can measure (Jinja joins inline)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_checked((")
        for arg in node.nodes:
            self.visit(arg, frame)
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

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Refuse ``'a' * 10**9``, ``9**9**9`` and the like before computing them."""
        check_binop(operator, left, right, self.max_output)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Refuse str methods that would build too much (``s.center(10**9)``)."""
        owner = getattr(getattr(obj, "__wrapped__", obj), "__self__", None)
        if isinstance(owner, str):
            name = getattr(obj, "__name__", "")
            args = check_str_call(owner, name, args, kwargs, self.max_output)
        return super().call(context, obj, *args, **kwargs)

    def concat_checked(self, parts: Sequence[Any]) -> str:
        """``a ~ b ~ c``, refused when the result is too long."""
        texts = [to_text(part) for part in parts]
        check_size(sum(map(len, texts)), self.max_output)
        return "".join(texts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``x.name``: a mapping's key first, as Go reads it (``steps.x.items``)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return self._found(obj, attribute, obj[attribute])
        return self._found(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``x[key]`` and ``index x key``."""
        return self._found(obj, argument, super().getitem(obj, argument))

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
    text = _MARKER.sub(call.unmark, to_text(value))  # built from values printed before
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

    def __init__(self, *, max_output: int = 1_048_576) -> None:
        self.max_output = max_output
        self._env = _Environment(max_output, to_text)
        self._shell_env = _Environment(max_output, _shell_finalize)
        self._template = functools.lru_cache(maxsize=4096)(self._compile)
        self._expression = functools.lru_cache(maxsize=4096)(self._compile_expression)

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
        with _errors(condition), _scope(context) as variables:
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
        with _errors(text):
            tree = env.parse(translate(text))
            refuse_internals(tree)
            return env.from_string(tree)

    def _compile_expression(self, condition: str) -> Callable[..., Any]:
        with _errors(condition):
            source = translate_expression(condition)
            expression = self._env.compile_expression(source, undefined_to_none=False)
            refuse_internals(Parser(self._env, source, state="variable").parse_expression())
            return expression

    def _render(self, shell: bool, text: str, context: Mapping[str, Any]) -> str:
        template = self._template(shell, text)
        with _errors(text), _scope(context) as variables:
            return self._collect(template.generate(variables))

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
