"""Checks that a value can be stored, compared and read back, wherever it comes from.

JSON bodies, query and path parameters, headers, pipeline files and step outputs all
end in the execution log. Some values parse fine and still break it: a NUL character
(Postgres text cannot hold one), a lone surrogate (not valid UTF-8: no answer holding
it can be encoded), ``NaN`` and ``Infinity`` (not JSON, refused by ``jsonb``), integers
past 64 bits (no column nor JSON reader elsewhere takes them), nesting deeper than a
reader recurses. Such a value must be refused where it enters, naming where it is,
before anything is stored: :func:`check` and :func:`check_text` do that. The store
checks every JSON value it writes again (``STORED_DEPTH``), so no path can store what
cannot be read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from conveyor.orchestrator.errors import UnstorableValue

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Nesting the store accepts in any JSON value. Pipeline files nest at most 200 levels;
#: what an answer wraps around a stored value stays within the serialiser's 255.
STORED_DEPTH = 240
#: Characters of a path shown in a message before it is cut short.
_SHOWN_PATH = 80
_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

Path = Sequence[str | int]


def where(base: str, path: Path) -> str:
    """``params`` + ``("a", 0, "b")`` -> ``params.a[0].b`` (long paths cut short)."""
    out = base
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        if len(out) > _SHOWN_PATH:
            return out[:_SHOWN_PATH] + "..."
    return out


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return f"contains a lone surrogate (U+{code:04X}): not valid Unicode"
    return None


def scalar_problem(value: Any) -> str | None:
    """Why a JSON scalar cannot be stored or compared, or None when it can."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return _int_problem(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{_NAMES.get(repr(value), repr(value))} is not a finite number"
    return f"is a {type(value).__name__}, not a JSON value"


def _int_problem(value: int) -> str | None:
    if INT_MIN <= value <= INT_MAX:
        return None
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else "thousands of"
    return f"an integer of {digits} digits is out of range (it must fit in 64 bits)"


def problem(value: Any, depth: int = STORED_DEPTH) -> tuple[tuple[str | int, ...], str] | None:
    """(path, why) of the first part of ``value`` that cannot be stored, or None.

    ``depth`` is how many objects and arrays may nest (``{"a": [1]}`` nests 2).
    Walks without recursion, so no value is too deep to be checked.
    """
    stack: list[tuple[tuple[str | int, ...], Any, int]] = [((), value, 0)]
    while stack:
        path, item, level = stack.pop()
        if isinstance(item, dict):
            if level >= depth:
                return path, f"nests more than {depth} levels deep"
            for key, child in item.items():
                if not isinstance(key, str):
                    return path, f"has a key that is not a string: {key!r}"
                if (why := text_problem(key)) is not None:
                    return (*path, key), f"its name {why}"
                stack.append(((*path, key), child, level + 1))
        elif isinstance(item, list | tuple):
            if level >= depth:
                return path, f"nests more than {depth} levels deep"
            stack.extend(((*path, i), child, level + 1) for i, child in enumerate(item))
        elif (why := scalar_problem(item)) is not None:
            return path, why
    return None


def check(
    value: Any, field: str, *, depth: int = STORED_DEPTH, max_bytes: int | None = None
) -> None:
    """Raise UnstorableValue naming where ``value`` (the input ``field``) cannot be stored.

    ``max_bytes`` bounds its size as compact JSON.
    """
    found = problem(value, depth)
    if found is not None:
        path, why = found
        raise UnstorableValue(f"{where(field, path) or 'the value'}: {why}")
    if max_bytes is not None:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > max_bytes:
            raise UnstorableValue(f"{field}: {size} bytes of JSON; the limit is {max_bytes}")


def check_text(text: str, field: str, *, max_length: int | None = None) -> None:
    """Raise UnstorableValue when the string ``field`` cannot be stored or compared."""
    if (why := text_problem(text)) is not None:
        raise UnstorableValue(f"{field}: {why}")
    if max_length is not None and len(text) > max_length:
        raise UnstorableValue(f"{field}: longer than {max_length} characters")
