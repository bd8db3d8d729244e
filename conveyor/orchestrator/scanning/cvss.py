"""CVSS v3.x base scores from vectors (``CVSS:3.1/AV:N/AC:L/...``), per the FIRST spec.

OSV records carry vectors, not scores; the score places a finding on the scale. Other
versions (v2, v4) return None and the caller falls back to the advisory's label.
"""

from __future__ import annotations

import math

_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_PRIVILEGES = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}
_REQUIRED = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")


def base_score(vector: str) -> float | None:
    """The CVSS v3.0/v3.1 base score of ``vector``, or None when it is not one."""
    metrics = _metrics(vector)
    if metrics is None:
        return None
    try:
        scope = metrics["S"]
        impact_sub = 1 - math.prod(1 - _WEIGHTS[m][metrics[m]] for m in ("C", "I", "A"))
        exploitability = 8.22 * math.prod(_WEIGHTS[m][metrics[m]] for m in ("AV", "AC", "UI"))
        exploitability *= _PRIVILEGES[scope][metrics["PR"]]
    except KeyError:
        return None
    if scope == "U":
        impact = 6.42 * impact_sub
    else:
        impact = 7.52 * (impact_sub - 0.029) - 3.25 * (impact_sub - 0.02) ** 15
    if impact <= 0:
        return 0.0
    total = impact + exploitability
    return _round_up(min(total if scope == "U" else 1.08 * total, 10.0))


def _metrics(vector: str) -> dict[str, str] | None:
    parts = vector.strip().split("/")
    if not parts or parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        return None
    metrics = dict(part.split(":", 1) for part in parts[1:] if ":" in part)
    return metrics if all(key in metrics for key in _REQUIRED) else None


def _round_up(value: float) -> float:
    """CVSS v3.1's Roundup: the smallest one-decimal number not below ``value``."""
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled / 100_000
    return (math.floor(scaled / 10_000) + 1) / 10.0
