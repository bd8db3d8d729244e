"""ScanResult to SARIF 2.1.0, the format code-scanning tools (GitHub, GitLab, IDEs) read.

One run per report; one rule per rule id, with the Conveyor severity as the rule's
default level and as ``security-severity`` (the score GitHub sorts by). Results carry
Conveyor's fingerprint under ``partialFingerprints``, ``baselineState`` when the step
compared with a baseline, and ``suppressions`` for findings the suppressions file waives.
"""

from __future__ import annotations

from typing import Any

from .results import Finding, ScanResult
from .severity import Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
FINGERPRINT_KEY = "conveyor/v1"

#: Conveyor severity to SARIF level (SARIF 2.1.0 §3.27.10).
LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "none",
    Severity.UNKNOWN: "warning",
}

#: A representative CVSS-like score per severity, as Grype's SARIF writes them.
SCORES = {
    Severity.CRITICAL: "9.0",
    Severity.HIGH: "7.0",
    Severity.MEDIUM: "4.0",
    Severity.LOW: "1.0",
    Severity.INFO: "0.0",
}


def render(result: ScanResult) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``result``."""
    rules, index = _rules(result.findings)
    driver: dict[str, Any] = {"name": result.scanner, "rules": rules}
    if result.scanner_version:
        driver["version"] = result.scanner_version
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "results": [_result(f, index[f.rule_id]) for f in result.findings],
        "invocations": [_invocation(result)],
        "properties": {
            "summary": result.summary.model_dump(),
            "passed_gate": result.passed_gate,
        },
    }
    return {"$schema": SCHEMA, "version": VERSION, "runs": [run]}


def _rules(findings: list[Finding]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for finding in findings:
        if finding.rule_id in index:
            continue
        index[finding.rule_id] = len(rules)
        rules.append(_rule(finding))
    return rules, index


def _rule(finding: Finding) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": finding.rule_id,
        "shortDescription": {"text": _first_line(finding.message) or finding.rule_id},
        "defaultConfiguration": {"level": LEVELS[finding.severity]},
        "properties": {"tags": ["security", finding.severity.value]},
    }
    if finding.severity in SCORES:
        rule["properties"]["security-severity"] = SCORES[finding.severity]
    if finding.help_uri:
        rule["helpUri"] = finding.help_uri
    return rule


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message or finding.rule_id},
        "locations": [_location(finding)],
        "partialFingerprints": {FINGERPRINT_KEY: finding.fingerprint},
        "properties": _properties(finding),
    }
    if finding.new is not None:
        result["baselineState"] = "new" if finding.new else "unchanged"
    if finding.suppressed:
        result["suppressions"] = [{"kind": "external", "justification": finding.suppressed}]
    return result


def _location(finding: Finding) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": finding.location or "."}}
    if finding.line:
        region: dict[str, Any] = {"startLine": finding.line}
        if finding.snippet:
            region["snippet"] = {"text": finding.snippet}
        physical["region"] = region
    return {"physicalLocation": physical}


def _properties(finding: Finding) -> dict[str, Any]:
    props: dict[str, Any] = {
        "severity": finding.severity.value,
        "nativeSeverity": finding.native_severity,
    }
    for name in ("package", "version", "fixed_version"):
        value = getattr(finding, name)
        if value is not None:
            props[name] = value
    return props


def _invocation(result: ScanResult) -> dict[str, Any]:
    notes = [{"level": "error", "message": {"text": text}} for text in result.errors]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notes:
        invocation["toolExecutionNotifications"] = notes
    return invocation


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""
