"""The functions Go-form templates call, and how templates print values.

The seed documents ``uuidv4``, ``now``, ``lower``, ``default`` and ``json``; the rest are
Go's builtins (``eq``, ``len``, ``printf``...) and the sprig functions pipelines reach for.
Argument order is Go's: the piped value comes last (``.x | default "n/a"``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import json
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any

from jinja2 import Environment, Undefined, pass_environment
from jinja2.sandbox import safe_range

from conveyor.orchestrator.pipeline.templatelimits import check_size, replaced_size

#: Names of the globals that make ``range`` iterate like Go: map values by key, or pairs.
ITEMS, PAIRS = "_go_items", "_go_pairs"
#: The Go function names :func:`functions` provides.
FUNCTION_NAMES = frozenset(
    {"uuidv4", "now", "lower", "upper", "default", "json", "index", "trim", "replace"}
    | {"contains", "hasPrefix", "hasSuffix", "eq", "ne", "lt", "le", "gt", "ge", "len"}
    | {"printf", "print", "b64enc", "b64dec"}
)

_MISSING = object()
_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")
_MAX_WIDTH = 4096  # printf widths beyond this are a memory bomb, not formatting


def to_text(value: Any) -> str:
    """Text for a value as templates print it: true/false, "" for None, JSON for data."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return to_json(value)
    return str(value)  # an Undefined raises here, naming what was missing


def to_json(value: Any) -> str:
    """Compact JSON, as Go's json.Marshal writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _default(fallback: Any, value: Any = _MISSING) -> Any:
    """Go/sprig order: ``default DEFAULT VALUE``, so ``.x | default "n/a"`` reads well."""
    return fallback if _empty(value) else value


def _empty(value: Any) -> bool:
    if value is _MISSING or value is None or isinstance(value, Undefined):
        return True
    if isinstance(value, bool | int | float):
        return not value  # sprig treats false and 0 as empty too
    return isinstance(value, str | Sized) and len(value) == 0


@pass_environment
def _index(env: Environment, value: Any, *keys: Any) -> Any:
    """``index .steps "step-name" "field"``, through the sandbox's item lookup."""
    for key in keys:
        value = env.getitem(value, key)
    return value


def _printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the common verbs (%v %s %d %f %q %t %x %%)."""
    values = iter(args)
    return _VERB.sub(lambda match: _verb(match, values), fmt)


def _verb(match: re.Match[str], values: Iterator[Any]) -> str:
    flags, width, precision, verb = match.groups()
    if verb == "%":
        return "%"
    if (
        "*" in (width, precision)
        or int(width or 0) > _MAX_WIDTH
        or int(precision or 0) > _MAX_WIDTH
    ):
        raise ValueError(f"printf: width {match.group()} is not supported")
    value = next(values, _MISSING)
    if value is _MISSING:
        return f"%!{verb}(MISSING)"
    spec = "%" + flags + (width or "") + (f".{precision}" if precision else "")
    return _format_verb(spec, verb, value)


def _format_verb(spec: str, verb: str, value: Any) -> str:
    if verb in "dfeEgGxXoc":
        return str((spec + verb) % value)
    if verb == "q":
        return (spec + "s") % json.dumps(to_text(value), ensure_ascii=False)
    if verb == "T":
        return (spec + "s") % type(value).__name__
    return (spec + "s") % to_text(value)  # v, s, t and the rest


def _print(*args: Any) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out = ""
    for k, arg in enumerate(args):
        if k and not isinstance(arg, str) and not isinstance(args[k - 1], str):
            out += " "
        out += to_text(arg)
    return out


def _replace(old: Any, new: Any, value: Any, *, limit: int) -> str:
    """Sprig order: ``replace OLD NEW S``, so ``.x | replace "a" "b"`` reads well."""
    text = to_text(value)
    check_size(replaced_size(text, str(old), str(new)), limit)
    return text.replace(str(old), str(new))


def _b64enc(value: Any) -> str:
    """Sprig's ``b64enc``: the UTF-8 text of ``value`` in standard base64."""
    return base64.b64encode(to_text(value).encode()).decode()


def _b64dec(value: Any) -> str:
    """Sprig's ``b64dec``: base64 back to text (an error when it is not base64 of text)."""
    try:
        return base64.b64decode(to_text(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"b64dec: not base64 of text: {exc}") from None


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise TypeError("eq needs at least two arguments")
    return any(first == other for other in others)


def _items(value: Any) -> Any:
    """What ``range`` walks: a map's values in key order, N times for a number, or the list."""
    if isinstance(value, Mapping):
        return [value[key] for key in _sorted_keys(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        return safe_range(value)
    return value


def _pairs(value: Any) -> Any:
    """What ``range $k, $v := ...`` walks: (key, value) or (index, item)."""
    if isinstance(value, Mapping):
        return [(key, value[key]) for key in _sorted_keys(value)]
    return enumerate(_items(value))


def _sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(mapping)
    except TypeError:  # mixed key types: Go cannot have them, YAML can
        return list(mapping)


def functions(limit: int) -> dict[str, Callable[..., Any]]:
    """The Go template functions by Go name; ``limit`` caps what ``replace`` may build."""
    return {
        "uuidv4": lambda: str(uuid.uuid4()),
        "now": lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lower": lambda s: to_text(s).lower(),
        "upper": lambda s: to_text(s).upper(),
        "trim": lambda s: to_text(s).strip(),
        "default": _default,
        "json": to_json,
        "index": _index,
        "replace": functools.partial(_replace, limit=limit),
        "contains": lambda sub, s: str(sub) in to_text(s),
        "hasPrefix": lambda prefix, s: to_text(s).startswith(str(prefix)),
        "hasSuffix": lambda suffix, s: to_text(s).endswith(str(suffix)),
        "eq": _eq,
        "ne": operator.ne,
        "lt": operator.lt,
        "le": operator.le,
        "gt": operator.gt,
        "ge": operator.ge,
        "len": len,
        "printf": _printf,
        "print": _print,
        "b64enc": _b64enc,
        "b64dec": _b64dec,
    }


def helpers() -> dict[str, Callable[..., Any]]:
    """Globals the translated source uses besides the functions: ``range`` walkers."""
    return {ITEMS: _items, PAIRS: _pairs}
