"""The seed's Go-template dialect, translated to Jinja2 source.

Pipelines written for the seed use Go's text/template forms: ``{{ .steps.build.image_id }}``,
``{{ index .steps "step-name" "field" }}``, ``{{ .name | lower }}`` and
``{{ if eq .env "prod" }}…{{ else }}…{{ end }}``. :func:`translate` rewrites those actions
into Jinja2 and passes everything else through untouched, so plain Jinja (``{{ steps.x }}``,
``{% if %}``, ``{{ a ~ b }}``) keeps working in the same string. The functions the
translated source calls live in :mod:`conveyor.orchestrator.pipeline.gofuncs`; the engine registers
them as ``_go_<name>`` so that run parameters (``index``, ``now``...) cannot shadow them.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import NamedTuple

from conveyor.orchestrator.errors import TemplateError
from conveyor.orchestrator.pipeline.gofuncs import FUNCTION_NAMES, ITEMS, PAIRS

#: Prefix of the Jinja globals the translation calls (``lower`` -> ``_go_lower``).
FUNC_PREFIX = "_go_"
#: Name of the whole context in translated source: Go's ``$`` and a top-level ``.``.
ROOT = "_go_root"
#: Functions a Go action may call; ``and``/``or``/``not`` become Jinja operators.
GO_FUNCTIONS = frozenset({*FUNCTION_NAMES, "and", "or", "not"})
_ZERO_ARG = frozenset({"uuidv4", "now"})
_OPERATORS = frozenset({"and", "or", "not"})
_CONSTANTS = {"true": "true", "false": "false", "nil": "none"}
# Top-level names that mean something else to Jinja; they are looked up on the root.
_RESERVED = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False"}
    | {"None", "loop", "self", "caller", "varargs", "kwargs", "recursive"}
)

_TOKEN = re.compile(
    r"""(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
      |(?P<num>[-+]?0[xX][\da-fA-F_]+|[-+]?\d[\d_]*(?:\.\d+)?(?:[eE][-+]?\d+)?)
      |(?P<field>(?:\.[^\W\d]\w*)+|\.)
      |(?P<var>\$\w*(?:\.[^\W\d]\w*)*)
      |(?P<decl>:=|=(?!=))
      |(?P<ident>[^\W\d]\w*)
      |(?P<punct>[()|,])""",
    re.VERBOSE,
)
# A field or variable where an operand starts (not ``a.b``, ``x).y`` or ``1.5``), for
# expressions that mix Go paths with Jinja operators: ``.a == 1``, ``.a ~ .b``.
_LOOSE_PATH = re.compile(
    r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      |(?<![\w)\]}.'"])(\$\w*(?:\.[^\W\d]\w*)*|(?:\.[^\W\d]\w*)+)(-[^\W\d])?""",
    re.VERBOSE,
)
_RANGE_DECL = re.compile(r"\$(\w+)\s*(?:,\s*\$(\w+)\s*)?:=\s*(.+)", re.DOTALL)
_OPEN = re.compile(r"\{\{|\{%|\{#")
_GO_COMMENT = re.compile(r"\{\{(-\s+)?/\*.*?\*/(\s+-)?\}\}", re.DOTALL)
_RAW = re.compile(r"\{%-?\s*raw\s*-?%\}")
_ENDRAW = re.compile(r"\{%-?\s*endraw\s*-?%\}")


class _Tok(NamedTuple):
    kind: str
    text: str
    spaced: bool  # whitespace (or the start of the action) comes before it


class _GoError(Exception):
    """The action is not valid Go; ``certain`` when it cannot be Jinja either."""

    def __init__(self, message: str, *, certain: bool = False) -> None:
        super().__init__(message)
        self.certain = certain


@dataclass
class _Frame:
    """One open ``if``/``range``/``with`` and what its ``{{ end }}`` must close."""

    kind: str
    close: str
    line: int
    dot: str | None = None  # the Jinja name ``.`` means inside this block


# --- expressions -------------------------------------------------------------------


def _lex(body: str) -> list[_Tok] | None:
    """Go tokens of ``body``, or None when it holds something Go does not have."""
    tokens: list[_Tok] = []
    pos, spaced = 0, True
    while pos < len(body):
        if body[pos].isspace():
            pos, spaced = pos + 1, True
            continue
        match = _TOKEN.match(body, pos)
        if match is None or match.lastgroup is None:
            return None
        tokens.append(_Tok(match.lastgroup, match.group(), spaced))
        pos, spaced = match.end(), False
    return tokens


def _evidence(tokens: list[_Tok]) -> tuple[bool, bool]:
    """(strong, weak) signs that ``tokens`` are Go rather than Jinja.

    Strong: a ``.field`` or ``$var`` where an operand starts, or a `raw string`: Jinja
    has none of them.
    Weak: a known function followed by a spaced argument at the start of a command,
    or a lone ``now``/``uuidv4``; Jinja has ``not x``, so these only count if they parse.
    """
    strong = weak = False
    for k, tok in enumerate(tokens):
        prev = tokens[k - 1].text if k else "("
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        operand_start = tok.spaced or prev in "(|,"
        if (
            tok.kind in ("var", "decl")
            or tok.text[0] == "`"
            or (tok.kind == "field" and operand_start)
        ):
            strong = True
        elif tok.kind == "ident" and tok.text in GO_FUNCTIONS and prev in "(|":
            weak = weak or (nxt is not None and nxt.spaced and nxt.text not in "|)")
    single = len(tokens) == 1 and tokens[0].text in _ZERO_ARG
    return strong, weak or single


class _Parser:
    """Recursive descent over one Go pipeline, producing a Jinja expression."""

    def __init__(self, tokens: list[_Tok], dot: str | None) -> None:
        self.tokens, self.pos, self.dot = tokens, 0, dot

    def parse(self) -> str:
        expr = self.pipeline()
        if self.pos < len(self.tokens):
            raise _GoError(f"unexpected {self.tokens[self.pos].text!r}")
        return expr

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise _GoError("the action ends too early")
        self.pos += 1
        return tok

    def pipeline(self) -> str:
        expr = self.command(None)
        while (tok := self.peek()) is not None and tok.text == "|":
            self.pos += 1
            expr = self.command(expr)
        return expr

    def command(self, piped: str | None) -> str:
        head = self.take()
        if head.kind == "ident" and head.text not in _CONSTANTS:
            return self.call(head, piped)
        if piped is not None:
            raise _GoError(f"{head.text!r} cannot take a piped value; it is not a function")
        operand = self.operand(head)
        if self.arguments():
            raise _GoError(f"{head.text!r} is not a function and takes no arguments")
        return operand

    def call(self, head: _Tok, piped: str | None) -> str:
        nxt = self.peek()
        if nxt is not None and nxt.text == "(" and not nxt.spaced:
            raise _GoError("Jinja call syntax")  # lower(x): leave it to Jinja
        first = self.peek()
        args = self.arguments()
        if head.text in GO_FUNCTIONS:
            return _call(head.text, [*args, piped] if piped is not None else args)
        if piped is not None:  # a Jinja filter as a later stage: .x | title
            return f"({piped}) | {head.text}" + (f"({', '.join(args)})" if args else "")
        certain = first is not None and first.kind in ("field", "var", "str", "num")
        raise _GoError(f"function {head.text!r} is not defined", certain=certain)

    def arguments(self) -> list[str]:
        args = []
        while (tok := self.peek()) is not None and tok.text not in "|)":
            if not tok.spaced:
                raise _GoError(f"missing space before {tok.text!r}")
            args.append(self.operand(self.take()))
        return args

    def operand(self, tok: _Tok) -> str:
        if tok.text == "(":
            inner = self.pipeline()
            if self.take().text != ")":
                raise _GoError("unclosed '('")
            term = f"({inner})"
        else:
            term = self.term(tok)
        while (nxt := self.peek()) is not None and nxt.kind == "field" and not nxt.spaced:
            self.pos += 1
            term += nxt.text
        return term

    def term(self, tok: _Tok) -> str:
        if tok.kind == "str":
            return _string(tok.text)
        if tok.kind == "num":
            return _number(tok.text)
        if tok.kind in ("field", "var"):
            return path(tok.text, self.dot)
        if tok.text in _CONSTANTS:
            return _CONSTANTS[tok.text]
        if tok.text in GO_FUNCTIONS - _OPERATORS:
            return f"{FUNC_PREFIX}{tok.text}()"
        raise _GoError(f"unexpected {tok.text!r}", certain=tok.kind == "ident")


def _call(name: str, args: list[str]) -> str:
    if name in ("and", "or"):
        if not args:
            raise _GoError(f"{name} needs at least one argument", certain=True)
        return "(" + f" {name} ".join(args) + ")"
    if name == "not":
        if len(args) != 1:
            raise _GoError("not takes exactly one argument", certain=True)
        return f"(not {args[0]})"
    return f"{FUNC_PREFIX}{name}({', '.join(args)})"


def _string(text: str) -> str:
    if text.startswith("`"):
        value = text[1:-1]
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise _GoError(f"bad string {text}") from exc
    # Jinja reads string literals with Python's unicode-escape rules, which JSON satisfies.
    return json.dumps(value, ensure_ascii=False)


def _number(text: str) -> str:
    digits = text.replace("_", "")
    try:
        return repr(int(digits, 0))
    except ValueError:
        return repr(float(digits))


def path(text: str, dot: str | None) -> str:
    """Jinja source for a Go field chain (``.a.b``) or variable (``$x.a``, ``$.a``)."""
    if text.startswith("$"):
        name, _, rest = text[1:].partition(".")
        if name:
            return f"_var_{name}" + (f".{rest}" if rest else "")
        return path(f".{rest}" if rest else ".", None)
    names = [n for n in text.split(".") if n]
    if dot is not None:
        return ".".join([dot, *names])
    if not names:
        return ROOT
    first = names[0] if names[0] not in _RESERVED else f'{ROOT}["{names[0]}"]'
    return ".".join([first, *names[1:]])


def _loose(body: str, dot: str | None) -> str:
    """Rewrite only the Go paths in an expression that is otherwise Jinja."""

    def swap(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1)
        if match.group(3):
            raise _GoError(
                f"'-' cannot be part of a field name after {match.group(2)}: use index, "
                'e.g. {{ index .steps "step-name" "field" }}',
                certain=True,
            )
        return path(match.group(2), dot)

    return _LOOSE_PATH.sub(swap, body)


def expression(body: str, dot: str | None = None) -> str | None:
    """Jinja source for a Go pipeline, or None when ``body`` is not recognisably Go."""
    tokens = _lex(body)
    if tokens is None:
        loose = _loose(body, dot)
        return loose if loose != body else None
    strong, weak = _evidence(tokens)
    if not (strong or weak):
        return None
    try:
        return _Parser(tokens, dot).parse()
    except _GoError as exc:
        if exc.certain and strong:
            raise
        return _loose(body, dot) if strong else None


def translate_expression(text: str) -> str:
    """A Go expression (``eq .env "prod"``) as Jinja; anything else is returned as is."""
    try:
        return expression(text.strip()) or text
    except _GoError as exc:
        raise TemplateError(str(exc)) from None


# --- whole templates ---------------------------------------------------------------


class _Translator:
    """One pass over a template, rewriting Go actions and tracking open blocks."""

    def __init__(self, text: str) -> None:
        self.text, self.line = text, 1
        self.out: list[str] = []
        self.stack: list[_Frame] = []

    def run(self) -> str:
        pos = 0
        while (match := _OPEN.search(self.text, pos)) is not None:
            self.out.append(self.text[pos : match.start()])
            self.line += self.text.count("\n", pos, match.start())
            end = self.tag_end(match)
            if end < 0 and match.group() == "{{":
                raise self.error("{{ is never closed with }}", self.line)
            if end < 0:
                pos = match.start()  # an unterminated {% or {#: Jinja reports it
                break
            raw = self.text[match.start() : end]
            self.out.append(self.action(raw) if match.group() == "{{" else raw)
            self.line += raw.count("\n")
            pos = end
        self.out.append(self.text[pos:])
        if self.stack:
            frame = self.stack[-1]
            raise self.error(f"{{{{ {frame.kind} }}}} has no {{{{ end }}}}", frame.line)
        return "".join(self.out)

    def tag_end(self, match: re.Match[str]) -> int:
        start, opener = match.start(), match.group()
        if opener == "{#":
            end = self.text.find("#}", start)
            return end + 2 if end >= 0 else -1
        if opener == "{%" and _RAW.match(self.text, start):
            raw_end = _ENDRAW.search(self.text, start)
            return raw_end.end() if raw_end else -1
        comment = _GO_COMMENT.match(self.text, start)
        if opener == "{{" and comment:
            return comment.end()
        return _close(self.text, match.end(), "}}" if opener == "{{" else "%}")

    def action(self, raw: str) -> str:
        inner = raw[2:-2]
        ltrim, rtrim = inner.startswith("-"), inner.endswith("-") and len(inner) > 1
        body = inner[int(ltrim) : len(inner) - int(rtrim)].strip()
        trims = ("-" if ltrim else "", "-" if rtrim else "", raw.count("\n"))
        if body.startswith("/*"):
            return "{#" + trims[0] + "\n" * trims[2] + trims[1] + "#}"
        try:
            return self.statement(body, trims) or self.output(raw, body, trims)
        except _GoError as exc:
            raise self.error(str(exc), self.line) from None

    def output(self, raw: str, body: str, trims: tuple[str, str, int]) -> str:
        decl = _lex(body) or []
        if len(decl) > 2 and decl[0].kind == "var" and decl[1].kind == "decl":
            value = _Parser(decl[2:], self.dot()).parse()
            return _tag(f"set {path(decl[0].text, None)} = {value}", trims)
        expr = expression(body, self.dot())
        if expr is None:
            return raw
        return "{{" + trims[0] + " " + expr + " " + "\n" * trims[2] + trims[1] + "}}"

    def statement(self, body: str, trims: tuple[str, str, int]) -> str | None:
        keyword, rest = [*body.split(None, 1), ""][:2]
        if keyword in ("if", "range", "with") and rest:
            opener = {"if": self.open_if, "range": self.open_range, "with": self.open_with}
            return opener[keyword](rest, trims)
        if keyword in ("define", "template", "block") and rest:
            raise _GoError(f"{{{{ {keyword} }}}} is not supported", certain=True)
        if not self.stack:
            if body == "end" or keyword == "else":
                raise _GoError(
                    f"{{{{ {keyword} }}}} without {{{{ if }}}}, {{{{ range }}}} or {{{{ with }}}}"
                )
            return None
        if keyword == "else":
            return self.else_(rest, trims)
        if body == "end":
            return _tag(self.stack.pop().close, trims)
        if body in ("break", "continue") and any(f.kind == "range" for f in self.stack):
            return _tag(body, trims)
        return None

    def dot(self) -> str | None:
        return next((f.dot for f in reversed(self.stack) if f.dot), None)

    def condition(self, text: str) -> str:
        return expression(text, self.dot()) or text

    def open_if(self, rest: str, trims: tuple[str, str, int]) -> str:
        self.stack.append(_Frame("if", "endif", self.line))
        return _tag(f"if {self.condition(rest)}", trims)

    def open_range(self, rest: str, trims: tuple[str, str, int]) -> str:
        decl = _RANGE_DECL.fullmatch(rest)
        source = self.condition(decl.group(3) if decl else rest)
        if decl and decl.group(2):
            key, item = f"_var_{decl.group(1)}", f"_var_{decl.group(2)}"
            loop = f"for {key}, {item} in {PAIRS}({source})"
        else:
            item = f"_var_{decl.group(1)}" if decl else f"_go_dot{len(self.stack) + 1}"
            loop = f"for {item} in {ITEMS}({source})"
        self.stack.append(_Frame("range", "endfor", self.line, item))
        return _tag(loop, trims)

    def open_with(self, rest: str, trims: tuple[str, str, int]) -> str:
        decl = _RANGE_DECL.fullmatch(rest)
        name = f"_var_{decl.group(1)}" if decl else f"_go_dot{len(self.stack) + 1}"
        value = self.condition(decl.group(3) if decl else rest)
        self.stack.append(_Frame("with", "endif %}{% endwith", self.line, name))
        return _tag(f"with {name} = {value} %}}{{% if {name}", trims)

    def else_(self, rest: str, trims: tuple[str, str, int]) -> str:
        frame = self.stack[-1]
        if rest.startswith("if ") and frame.kind == "if":
            return _tag(f"elif {self.condition(rest[3:].strip())}", trims)
        if rest:
            raise _GoError(f"{{{{ else {rest} }}}} is not supported here", certain=True)
        frame.dot = None  # in Go, the else branch of range/with sees the outer dot
        return _tag("else", trims)

    def error(self, message: str, line: int) -> TemplateError:
        where = f"line {line}: " if "\n" in self.text else ""
        return TemplateError(f"{where}{message}")


def _tag(statement: str, trims: tuple[str, str, int]) -> str:
    return "{%" + trims[0] + " " + statement + " " + "\n" * trims[2] + trims[1] + "%}"


def _close(text: str, pos: int, closer: str) -> int:
    """Index just past ``closer``, skipping quoted strings; -1 when it never comes."""
    while pos < len(text):
        char = text[pos]
        if text.startswith(closer, pos):
            return pos + len(closer)
        if char in "\"'`":
            end = text.find(char, pos + 1)
            while end > 0 and char != "`" and text[end - 1] == "\\":
                end = text.find(char, end + 1)
            if end < 0:
                return -1
            pos = end
        pos += 1
    return -1


def translate(text: str) -> str:
    """Rewrite the Go-template actions in ``text`` as Jinja2; leave everything else."""
    if "{{" not in text:
        return text
    return _Translator(text).run()
