"""Size limits the template sandbox enforces, checked before anything big is built.

Jinja's sandbox stops attribute escapes but not memory bombs: ``'a' * 10**9``,
``9**9**9``, ``s.center(10**9)`` or ``"{0}{0}{0}".format(s)``. The engine routes
operators, str methods and the filters that amplify through these checks; each raises
OverflowError (reported as a TemplateError) when the result would pass the limit.
Lists, tuples and dicts a template builds (literals, ``*``, ``+``, filter and call
results) are weighed whole, shared parts included (:func:`weigh`): ten references to one
big list cost ten of it, so nesting cannot grow a structure that printing or comparing
would then spend hours on inside one operation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MappingView,
    MutableMapping,
    Set,
)
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError

#: Operators the sandbox must hand to :func:`check_binop`.
INTERCEPTED_BINOPS = frozenset({"**", "*", "+", "%"})
MAX_INT_BITS = 16_384  # about 4,900 digits; Python will not print more than 4,300 anyway
_FORMAT_FIELD = re.compile(r"%[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[a-zA-Z]|\{[^{}]*\}")


def refuse_internals(tree: nodes.Node) -> None:
    """Refuse ``x.__class__``, ``x['__globals__']`` and ``x|attr('__init__')`` on sight.

    The sandbox blocks them when a template renders too; finding them in the syntax tree
    lets ``conveyor validate`` report them before anything runs. No pipeline value or
    output is named like a Python internal, so nothing legitimate is refused.
    """
    for node in _innermost_first(tree):
        name = _accessed_name(node)
        if name is not None and name.startswith("__"):
            raise SecurityError(f"{name!r} is a Python internal; templates cannot reach it")


def _innermost_first(node: nodes.Node) -> Iterator[nodes.Node]:
    """Nodes in the order they are written: ``a.__class__`` before ``a.__class__.__mro__``."""
    for child in node.iter_child_nodes():
        yield from _innermost_first(child)
    yield node


def _accessed_name(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem):
        argument = node.arg
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        argument = node.args[0]
    else:
        return None
    if isinstance(argument, nodes.Const) and isinstance(argument.value, str):
        return argument.value
    return None


def size(value: Any) -> int:
    """Roughly how many characters ``value`` stands for once printed."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) + sum(len(item) for item in value if isinstance(item, str))
    return 0


#: Containers whose parts :func:`weigh` counts (ranges are counted by their length).
_WALKED = (list, tuple, Mapping, Set, MappingView)


def _leaf_weight(value: Any) -> int | None:
    """The weight of a value with no parts to walk; None for a container."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, range):
        return len(value)
    if isinstance(value, _WALKED):
        return None
    return 1


def _parts(value: Any) -> Iterator[Any]:
    if isinstance(value, Mapping):
        for pair in value.items():
            yield from pair
    else:
        yield from value


def weigh(value: Any, limit: int, known: dict[int, tuple[Any, int]]) -> int:
    """How big ``value`` is as a whole: its characters and items, nested ones included.

    A list that holds one list ten times weighs ten of it, although building it cost
    ten references: nested literals and repetition grow a structure exponentially, and
    printing or comparing it then runs for hours inside one operation. ``known`` holds
    the weight of every container weighed before (keeping it alive, so its id stays
    its own), so a structure built from weighed parts costs one look per part.
    Raises OverflowError past ``limit``.
    """
    leaf = _leaf_weight(value)
    if leaf is not None:
        return leaf
    if id(value) in known:
        return known[id(value)][1]
    # [container, its parts still to weigh, weight so far]; explicit, as nesting can be deep
    stack: list[list[Any]] = [[value, _parts(value), 1]]
    open_ids = {id(value)}
    while True:
        frame = stack[-1]
        for part in frame[1]:
            weight = _leaf_weight(part)
            if weight is None:
                if id(part) in known:
                    weight = known[id(part)][1]
                elif id(part) in open_ids:  # a cycle: no template builds one
                    weight = 1
                else:
                    stack.append([part, _parts(part), 1])
                    open_ids.add(id(part))
                    break
            frame[2] += weight
            check_weight(frame[2], limit)
        else:
            stack.pop()
            open_ids.discard(id(frame[0]))
            known[id(frame[0])] = (frame[0], frame[2])
            if not stack:
                return int(frame[2])
            stack[-1][2] += frame[2]
            check_weight(stack[-1][2], limit)


def check_weight(weight: int, limit: int) -> None:
    """Refuse a structure of ``weight`` (see :func:`weigh`) over ``limit``."""
    if weight > limit:
        raise OverflowError(
            f"the result would hold more than the limit of {limit} characters and items"
        )


def check_size(estimate: int, limit: int) -> None:
    """Refuse a result of ``estimate`` characters when it is over ``limit``."""
    if estimate > limit:
        raise OverflowError(f"the result would be longer than the limit of {limit} characters")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(values: Iterable[Any], limit: int) -> None:
    # Widths and counts (center, batch, tojson indent...) past the limit only make bombs.
    if any(_is_int(value) and abs(value) > limit for value in values):
        raise OverflowError(f"a number above {limit} is not allowed here")


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise OverflowError(f"the number would have more than {MAX_INT_BITS} bits")


def _check_format(fmt: Any, args: Any, limit: int) -> None:
    """``fmt % args`` and ``fmt.format(*args)``: every field at its widest."""
    if not isinstance(fmt, str):
        return
    if isinstance(args, Mapping):
        args = list(args.values())
    elif not isinstance(args, tuple | list):
        args = [args]
    fields = _FORMAT_FIELD.findall(fmt)
    widths = [int(n) for field in fields for n in re.findall(r"\d+", field)]
    widest = max([0, *widths, *map(size, args), *filter(_is_int, args)])
    check_size(len(fmt) + len(fields) * widest, limit)


def check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    """Refuse ``'a' * 10**9``, ``9**9**9``, ``s + s`` past the limit and wide formats."""
    if operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _check_bits(right * abs(left).bit_length())
    elif operator == "*" and _is_int(left) and _is_int(right):
        _check_bits(left.bit_length() + right.bit_length())
    elif operator == "*" and (_is_int(left) or _is_int(right)):
        count, repeated = (left, right) if _is_int(left) else (right, left)
        check_size(size(repeated) * max(count, 0), limit)
    elif operator == "+":
        check_size(size(left) + size(right), limit)
    elif operator == "%":
        _check_format(left, right, limit)


def replaced_size(text: str, old: str, new: str) -> int:
    """Length of ``text.replace(old, new)``, without building it."""
    count = text.count(old) if old else len(text) + 1
    return len(text) + count * (len(new) - len(old))


def check_str_call(
    owner: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int
) -> tuple[Any, ...]:
    """Check ``owner.name(*args)``; returns the arguments (a generator made a list)."""
    _check_ints([*args, *kwargs.values()], limit)
    if name == "join" and args:
        items = list(args[0])  # a generator can only be measured once it is a list
        check_size(sum(map(size, items)) + len(owner) * len(items), limit)
        return (items, *args[1:])
    if name in ("format", "format_map"):
        _check_format(owner, args[0] if name == "format_map" and args else args, limit)
    elif name == "replace" and len(args) >= 2:
        check_size(replaced_size(owner, str(args[0]), str(args[1])), limit)
    elif name == "expandtabs":
        check_size(len(owner) + owner.count("\t") * int(args[0] if args else 8), limit)
    return args


def _size_replace(s: Any, old: Any = "", new: Any = "", count: Any = None) -> int:
    return replaced_size(str(s), str(old), str(new))


def _size_indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    pad = width if _is_int(width) else len(str(width))
    return len(str(s)) + (str(s).count("\n") + 1) * pad


def _size_wordwrap(s: Any, width: Any = 79, breaks: Any = True, wrapstring: Any = None) -> int:
    text = str(s)
    lines = len(text.split()) + len(text) // max(int(width), 1) + 1
    return len(text) + lines * len(wrapstring or "\n")


# Jinja filters that can make far more than they are given, and how much they would.
_FILTER_SIZES: dict[str, Callable[..., int] | None] = {
    "replace": _size_replace,
    "indent": _size_indent,
    "wordwrap": _size_wordwrap,
    **dict.fromkeys(["center", "batch", "slice", "tojson", "format", "join"]),
}


def guard_filters(filters: MutableMapping[str, Callable[..., Any]], limit: int) -> None:
    """Wrap the amplifying filters of an environment in size checks."""
    for name in _FILTER_SIZES:
        filters[name] = _guarded(name, filters[name], limit)


def _guarded(name: str, func: Callable[..., Any], limit: int) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    estimate = _FILTER_SIZES[name]

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja still passes the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, value, rest = args[:skip], args[skip], args[skip + 1 :]
        _check_ints([*rest, *kwargs.values()], limit)
        if name == "join":
            separator = str(rest[0] if rest else kwargs.get("d", ""))
            (value,) = check_str_call(separator, "join", (value,), {}, limit)
        elif name == "format":
            _check_format(value, (*rest, *kwargs.values()), limit)
        elif estimate is not None:
            check_size(estimate(value, *rest, **kwargs), limit)
        return func(*head, value, *rest, **kwargs)

    return guarded
