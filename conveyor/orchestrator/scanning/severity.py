"""One severity scale for every scanner, and the one table that maps their words onto it.

Conveyor's scale, highest first: ``critical``, ``high``, ``medium``, ``low``, ``info``;
plus ``unknown`` for a finding the scanner did not rate. Every scanner's vocabulary
maps onto it through ``WORDS`` (case-insensitive) or, for numbers, ``from_score``:

=========  =================================================================  ==========
Conveyor   scanner words                                                      CVSS score
=========  =================================================================  ==========
critical   CRITICAL (Trivy, Grype ``Critical``, GHSA, Semgrep's new scale)     9.0 - 10.0
high       HIGH (Trivy, Grype, Bandit, GHSA), ERROR (Semgrep), SARIF error    7.0 - 8.9
medium     MEDIUM, MODERATE (GHSA), WARNING (Semgrep), SARIF warning          4.0 - 6.9
low        LOW, SARIF note                                                    0.1 - 3.9
info       INFO (Semgrep), INVENTORY, EXPERIMENT, NEGLIGIBLE (Grype),         0.0
           SARIF none
unknown    UNKNOWN (Trivy, Grype), UNDEFINED (Bandit), no rating at all       (none)
           (pip-audit reports none), any word not in this table
=========  =================================================================  ==========

Semgrep's legacy ERROR/WARNING/INFO are its High/Medium/Low-or-Info, as Semgrep itself
reads them. Grype's ``Negligible`` ranks below ``Low`` in Grype, so it is ``info`` here.
Scores follow CVSS v3's qualitative ratings (and GitHub's reading of SARIF's
``security-severity``). A gate treats ``unknown`` as ``high`` unless a step says
otherwise (``unknown_severity``): an unrated vulnerability fails closed.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """A finding's severity on Conveyor's one scale."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """Higher is worse; ``unknown`` ranks 0 (gates give it a rank of their own)."""
        return _RANKS[self]


_RANKS = {
    Severity.CRITICAL: 5,
    Severity.HIGH: 4,
    Severity.MEDIUM: 3,
    Severity.LOW: 2,
    Severity.INFO: 1,
    Severity.UNKNOWN: 0,
}

#: The one table: every scanner's severity word (lower case) and where it lands.
WORDS: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "error": Severity.HIGH,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "warning": Severity.MEDIUM,
    "low": Severity.LOW,
    "note": Severity.LOW,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "inventory": Severity.INFO,
    "experiment": Severity.INFO,
    "negligible": Severity.INFO,
    "none": Severity.INFO,
    "unknown": Severity.UNKNOWN,
    "undefined": Severity.UNKNOWN,
}

#: The words a threshold may use: the scale's own and the ones the seed's docs use.
THRESHOLD_WORDS = tuple(word for word, sev in WORDS.items() if sev is not Severity.UNKNOWN)


def from_word(word: Any) -> Severity:
    """Map a scanner's severity word onto the scale; an unmapped word is ``unknown``."""
    if not isinstance(word, str):
        return Severity.UNKNOWN
    return WORDS.get(word.strip().lower(), Severity.UNKNOWN)


def from_score(score: Any) -> Severity:
    """Map a CVSS base score (0.0 to 10.0, number or numeric string) onto the scale."""
    try:
        value = float(score)
    except (TypeError, ValueError):
        return Severity.UNKNOWN
    if math.isnan(value) or not 0.0 <= value <= 10.0:
        return Severity.UNKNOWN
    if value >= 9.0:
        return Severity.CRITICAL
    if value >= 7.0:
        return Severity.HIGH
    if value >= 4.0:
        return Severity.MEDIUM
    return Severity.LOW if value > 0.0 else Severity.INFO


def parse_threshold(value: Any) -> Severity:
    """A gate threshold from a word of the table (``high``, ``error``, ``WARNING``…).

    Raises ValueError for anything else, ``unknown`` included: a threshold must rank.
    """
    severity = from_word(value) if isinstance(value, str) else Severity.UNKNOWN
    if severity is Severity.UNKNOWN:
        words = ", ".join(THRESHOLD_WORDS)
        raise ValueError(f"{value!r} is not a severity (use one of: {words})")
    return severity
