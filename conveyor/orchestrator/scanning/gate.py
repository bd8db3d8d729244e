"""The severity gate: does a scan's result let the pipeline go on?

A finding counts against the gate when it is not suppressed, when ``fail_on`` is
``any`` or it is new (``fail_on: new``), and when its severity ranks at or above the
threshold. ``unknown`` ranks as ``unknown_as`` (``high`` by default): a vulnerability
nobody rated fails closed. ``fail_on: never`` reports and never fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .results import Finding
from .severity import Severity


class FailOn(StrEnum):
    """Which findings a gate counts."""

    ANY = "any"
    NEW = "new"
    NEVER = "never"


@dataclass(frozen=True)
class GatePolicy:
    """A gate: the lowest severity that fails, which findings count, how unknown ranks."""

    threshold: Severity = Severity.HIGH
    fail_on: FailOn = FailOn.ANY
    unknown_as: Severity = Severity.HIGH

    def __post_init__(self) -> None:
        if self.threshold is Severity.UNKNOWN or self.unknown_as is Severity.UNKNOWN:
            raise ValueError("a gate threshold must be a severity that ranks, not unknown")

    def rank(self, severity: Severity) -> int:
        """How the gate ranks ``severity``."""
        return (self.unknown_as if severity is Severity.UNKNOWN else severity).rank


@dataclass(frozen=True)
class GateVerdict:
    """What the gate decided, and the findings that decided it."""

    passed: bool
    failing: tuple[Finding, ...]
    reason: str


def evaluate(findings: Sequence[Finding], policy: GatePolicy) -> GateVerdict:
    """Apply ``policy`` to ``findings``."""
    if policy.fail_on is FailOn.NEVER:
        return GateVerdict(True, (), "the gate is off (fail_on: never)")
    failing = tuple(f for f in findings if _counts(f, policy))
    new = "new " if policy.fail_on is FailOn.NEW else ""
    if not failing:
        return GateVerdict(True, (), f"no {new}finding at or above {policy.threshold.value}")
    counted = describe(failing, new)
    return GateVerdict(False, failing, f"{counted} at or above {policy.threshold.value}")


def _counts(finding: Finding, policy: GatePolicy) -> bool:
    if finding.suppressed:
        return False
    if policy.fail_on is FailOn.NEW and not finding.new:
        return False
    return policy.rank(finding.severity) >= policy.threshold.rank


def describe(findings: Sequence[Finding], adjective: str = "") -> str:
    """``3 findings (2 high, 1 unknown)``: the count, then by severity, worst first."""
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    parts = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    noun = "finding" if len(findings) == 1 else "findings"
    text = f"{len(findings)} {adjective}{noun}"
    return f"{text} ({parts})" if parts else text
