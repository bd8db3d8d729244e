"""Durations as pipelines write them: ``300s``, ``10m``, ``1h30m``, ``24h``, or seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Return seconds for ``value``; raise ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 10m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError("a duration is a number of seconds or a string like 30s, 10m, 1h30m")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_text(text: str) -> float:
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration (use 30s, 10m, 1h30m, 24h)")
    return total


def format_duration(seconds: float | None) -> str:
    """Short human form: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


#: A pydantic field type: accepts ``10m`` or ``600`` and holds seconds as a float.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda v: v, return_type=float),
]
