"""Safe YAML loading for pipeline files, keeping the line of every value.

PyYAML's ``safe_load`` forgets where things were, accepts duplicate keys silently and
expands aliases without limit. :func:`load_yaml` composes the node graph instead, checks
it (one document, no duplicate keys, no alias bombs, bounded nesting) and builds the data
itself, recording for each path (``("pipelines", "ci", "steps", 0)``) the line it is on,
so that errors found later can point into the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from conveyor.orchestrator.errors import Problem, SpecError
from conveyor.orchestrator.values import scalar_problem, text_problem, where

# libyaml when it is there: several times faster than the pure-Python parser.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_DEPTH = 200  # libyaml's composer recurses in C: far deeper nesting would crash it
_TOO_DEEP = f"YAML is nested more than {_MAX_DEPTH} levels deep"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Loaded:
    """A loaded YAML document and the 1-based line of each path in it."""

    data: Any
    lines: dict[Path, int]

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its nearest ancestor the file has."""
        key = tuple(path)
        while key not in self.lines:
            if not key:
                return None
            key = key[:-1]
        return self.lines[key]


def load_yaml(
    text: str | bytes,
    *,
    max_bytes: int = 1_048_576,
    max_nodes: int = 200_000,
    source: str = "<string>",
) -> Loaded:
    """Parse one YAML document safely; raise SpecError with the line of any problem."""
    fail = _Fail(source)
    text = _decoded(text, max_bytes, fail)
    try:
        _check_events(yaml.parse(text, Loader=_Loader), fail)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        # The library may stop deep nesting itself, in its own words: whichever layer
        # notices first, deep nesting is reported as Conveyor's limit, at its line.
        mark = exc.problem_mark or exc.context_mark
        _check_nesting_before(text, mark, fail)
        raise fail(_yaml_message(exc), _line(mark)) from None
    except yaml.reader.ReaderError as exc:  # characters YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise fail(f"{exc.reason}: U+{code:04X}", line) from None
    if root is None:
        return Loaded(None, {})
    builder = _Builder(fail, max_nodes)
    try:
        return builder.load(root)
    except RecursionError:  # a last guard: the depth checks above should come first
        raise fail(_TOO_DEEP, builder.line) from None


class _Fail:
    """Makes the SpecErrors of one load, naming the file when it has a name."""

    def __init__(self, source: str) -> None:
        self.prefix = "" if source == "<string>" else f"{source}: "

    def __call__(self, message: str, line: int | None = None) -> SpecError:
        # One line, whatever a library's message looks like.
        return SpecError(Problem("", " ".join((self.prefix + message).split()), line))


def _decoded(text: str | bytes, max_bytes: int, fail: _Fail) -> str:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise fail(f"pipeline file is {_human(len(raw))}; the limit is {_human(max_bytes)}")
    if isinstance(text, str):
        return text.removeprefix("\ufeff")
    try:
        return text.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = text.count(b"\n", 0, exc.start) + 1
        message = f"the file is not UTF-8 text (byte 0x{text[exc.start]:02x})"
        raise fail(message, line) from None


def _human(size: int) -> str:
    if size >= 1_048_576:
        return f"{size / 1_048_576:.1f} MB"
    return f"{size / 1024:.1f} KB" if size >= 1024 else f"{size} bytes"


def _check_events(events: Iterator[yaml.Event], fail: _Fail) -> None:
    """Refuse a second document and deep nesting before composing (libyaml would crash)."""
    depth = documents = 0
    for event in events:
        depth = _nested(event, depth, fail)
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise fail(
                    "one YAML document per file; a second one starts", _line(event.start_mark)
                )


def _nested(event: yaml.Event, depth: int, fail: _Fail) -> int:
    """The nesting depth after ``event``; Conveyor's nesting error past the limit."""
    if isinstance(event, yaml.CollectionStartEvent):
        if depth + 1 > _MAX_DEPTH:
            raise fail(_TOO_DEEP, _line(event.start_mark))
        return depth + 1
    if isinstance(event, yaml.CollectionEndEvent):
        return depth - 1
    return depth


def _check_nesting_before(text: str, mark: Any, fail: _Fail) -> None:
    """Raise Conveyor's nesting error if ``text`` nests too deep before ``mark``.

    Run when the parser stopped on an error, with the pure-Python parser (which has no
    limit of its own) over the text up to that point only: cheap, and independent of
    which parser, or which version of it, noticed first.
    """
    end = len(text) if mark is None or mark.index is None else min(len(text), mark.index + 1)
    depth = 0
    try:
        for event in yaml.parse(text[:end], Loader=yaml.SafeLoader):
            depth = _nested(event, depth, fail)
    except yaml.YAMLError:
        return  # a problem of another kind, or the end of the text: the original stands


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    column = f" at column {mark.column + 1}" if mark is not None else ""
    problem = exc.problem or exc.context or "malformed YAML"
    return f"invalid YAML{column}: {problem}"


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _where(path: Path) -> str:
    """``pipelines.ci.steps[0]: `` (nothing at the top of the file)."""
    return f"{where('', path)}: " if path else ""


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


class _Builder:
    """Checks the node graph, then builds Python data and the line of each path."""

    def __init__(self, fail: _Fail, max_nodes: int) -> None:
        self.fail, self.max_nodes = fail, max_nodes
        self.constructor = SafeConstructor()
        self.sizes: dict[int, int] = {}  # node id -> nodes under it, aliases expanded
        self.open: set[int] = set()  # nodes being counted: meeting one again is a cycle
        self.lines: dict[Path, int] = {}
        self.heights: dict[int, int] = {}  # node id -> levels under it, aliases expanded
        self.line: int | None = None  # of the node being looked at (for a last-guard error)

    def load(self, root: Node) -> Loaded:
        if self.count(root) > self.max_nodes:
            raise self.too_many()
        return Loaded(self.build(root, ()), self.lines)

    def too_many(self) -> SpecError:
        return self.fail(
            f"YAML expands to more than {self.max_nodes} nodes (aliases used as a bomb?)"
        )

    def count(self, node: Node, depth: int = 1) -> int:
        """Nodes under ``node`` with aliases expanded; memoised, so each is visited once.

        ``depth`` is how deep ``node`` sits, aliases expanded: aliases of aliases nest
        data as deep as brackets do, and meet the same limit.
        """
        self.line = _line(node.start_mark)
        if depth + self.heights.get(id(node), 1) - 1 > _MAX_DEPTH:
            raise self.fail(_TOO_DEEP, self.line)
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        if id(node) in self.open:
            raise self.fail("recursive alias: it refers to a node that contains it", self.line)
        self.open.add(id(node))
        total, height = 1, 1
        for child in self.children(node):
            total += self.count(child, depth + 1)
            height = max(height, 1 + self.heights[id(child)])
        if total > self.max_nodes:
            raise self.too_many()
        self.open.discard(id(node))
        self.sizes[id(node)] = total
        self.heights[id(node)] = height
        return total

    def children(self, node: Node) -> list[Node]:
        if isinstance(node, ScalarNode):
            return []
        if node.tag not in _COLLECTION_TAGS:
            raise self.fail(f"the tag {_short(node.tag)} is not supported", _line(node.start_mark))
        if not isinstance(node, MappingNode):
            return list(node.value)
        self.check_keys(node)
        self.constructor.flatten_mapping(node)  # resolve << merge keys once, in place
        return [child for pair in node.value for child in pair]

    def check_keys(self, node: MappingNode) -> None:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.fail("a mapping key must be a plain value", _line(key_node.start_mark))
            if key_node.value in seen:
                raise self.fail(f"duplicate key {key_node.value!r}", _line(key_node.start_mark))
            seen.add(key_node.value)

    def build(self, node: Node, path: Path) -> Any:
        self.line = node.start_mark.line + 1
        self.lines.setdefault(path, self.line)
        if isinstance(node, SequenceNode):
            return [self.build(child, (*path, k)) for k, child in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        try:
            value = self.constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:
            unknown = (exc.problem or "").startswith("could not determine a constructor")
            message = f"the tag {_short(node.tag)} is not supported" if unknown else exc.problem
            raise self.fail(message or "bad value", _line(node.start_mark)) from None
        except (ValueError, TypeError, AttributeError, KeyError):  # `!!int abc` and the like
            message = f"{node.value!r} is not a valid {_short(node.tag)}"
            raise self.fail(message, _line(node.start_mark)) from None
        # A value that parses but cannot be stored ("\0", .nan, 2**64) stops here, before
        # a run or a registered pipeline holds it.
        if isinstance(value, str | int | float) and (why := scalar_problem(value)) is not None:
            raise self.fail(f"{_where(path)}{why}", _line(node.start_mark))
        return value

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            # Keys as written: `on:` stays "on" rather than becoming True (YAML 1.1).
            key = str(key_node.value)
            if (why := text_problem(key)) is not None:
                raise self.fail(f"{_where(path)}a key {why}", _line(key_node.start_mark))
            self.lines[(*path, key)] = key_node.start_mark.line + 1  # where the key is
            result[key] = self.build(value_node, (*path, key))
        return result
