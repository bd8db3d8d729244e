"""The severity gate, table-tested: thresholds, unknown severities, new-only, empty results."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.scanning.gate import FailOn, GatePolicy, evaluate
from conveyor.orchestrator.scanning.results import Finding
from conveyor.orchestrator.scanning.severity import Severity

S = Severity


def finding(
    severity: Severity, *, new: bool | None = None, suppressed: str | None = None
) -> Finding:
    """A finding of ``severity``."""
    return Finding(
        scanner="t",
        rule_id=f"R-{severity.value}",
        severity=severity,
        location="a.py",
        new=new,
        suppressed=suppressed,
    )


# (threshold, severity of the one finding, does the gate pass?)
TABLE = [
    (S.CRITICAL, S.CRITICAL, False),
    (S.CRITICAL, S.HIGH, True),
    (S.CRITICAL, S.UNKNOWN, True),  # unknown ranks as high by default
    (S.HIGH, S.CRITICAL, False),
    (S.HIGH, S.HIGH, False),
    (S.HIGH, S.UNKNOWN, False),
    (S.HIGH, S.MEDIUM, True),
    (S.MEDIUM, S.MEDIUM, False),
    (S.MEDIUM, S.LOW, True),
    (S.MEDIUM, S.UNKNOWN, False),
    (S.LOW, S.LOW, False),
    (S.LOW, S.INFO, True),
    (S.INFO, S.INFO, False),
    (S.INFO, S.UNKNOWN, False),
]


@pytest.mark.parametrize(("threshold", "severity", "passes"), TABLE)
def test_gate_fails_at_or_above_the_threshold(
    threshold: Severity, severity: Severity, passes: bool
) -> None:
    """Given one finding, When gated at a threshold, Then it fails exactly at or above it."""
    verdict = evaluate([finding(severity)], GatePolicy(threshold))
    assert verdict.passed is passes
    assert len(verdict.failing) == (0 if passes else 1)


@pytest.mark.parametrize("threshold", [s for s in Severity if s is not S.UNKNOWN])
@pytest.mark.parametrize("fail_on", list(FailOn))
def test_an_empty_result_passes_every_gate(threshold: Severity, fail_on: FailOn) -> None:
    """Given no findings, When gated, Then it passes, whatever the threshold."""
    verdict = evaluate([], GatePolicy(threshold, fail_on))
    assert verdict.passed
    assert verdict.failing == ()


@pytest.mark.parametrize(
    ("unknown_as", "threshold", "passes"),
    [
        (S.CRITICAL, S.CRITICAL, False),
        (S.LOW, S.HIGH, True),
        (S.LOW, S.LOW, False),
        (S.INFO, S.LOW, True),
    ],
)
def test_unknown_severity_ranks_as_the_step_says(
    unknown_as: Severity, threshold: Severity, passes: bool
) -> None:
    """Given an unrated finding, When unknown_as is set, Then it ranks as that."""
    verdict = evaluate([finding(S.UNKNOWN)], GatePolicy(threshold, unknown_as=unknown_as))
    assert verdict.passed is passes


def test_fail_on_new_counts_only_new_findings() -> None:
    """Given old and new high findings, When fail_on is new, Then only new ones fail it."""
    old = finding(S.CRITICAL, new=False)
    assert evaluate([old], GatePolicy(S.HIGH, FailOn.NEW)).passed
    unknown_baseline = finding(S.CRITICAL, new=None)
    assert evaluate([unknown_baseline], GatePolicy(S.HIGH, FailOn.NEW)).passed
    fresh = finding(S.HIGH, new=True)
    verdict = evaluate([old, fresh], GatePolicy(S.HIGH, FailOn.NEW))
    assert not verdict.passed
    assert verdict.failing == (fresh,)
    assert verdict.reason == "1 new finding (1 high) at or above high"


def test_suppressed_findings_never_count() -> None:
    """Given a suppressed critical finding, When gated at info, Then it passes."""
    assert evaluate([finding(S.CRITICAL, suppressed="accepted")], GatePolicy(S.INFO)).passed


def test_fail_on_never_reports_only() -> None:
    """Given critical findings, When fail_on is never, Then the gate passes."""
    assert evaluate([finding(S.CRITICAL)], GatePolicy(S.INFO, FailOn.NEVER)).passed


def test_the_reason_counts_failing_findings_worst_first() -> None:
    """Given mixed findings, When the gate fails, Then its reason counts them by severity."""
    findings = [finding(S.HIGH), finding(S.CRITICAL), finding(S.UNKNOWN), finding(S.LOW)]
    verdict = evaluate(findings, GatePolicy(S.HIGH))
    assert verdict.reason == "3 findings (1 critical, 1 high, 1 unknown) at or above high"


def test_a_threshold_of_unknown_is_refused() -> None:
    """Given unknown as a threshold, Then the policy refuses it: a threshold must rank."""
    with pytest.raises(ValueError, match="must be a severity that ranks"):
        GatePolicy(S.UNKNOWN)
