"""SARIF 2.1.0 from any tool, read into a ScanResult (the generic scanner's parser).

A result's severity is resolved in this order: a severity word in the result's
properties (Bandit's ``issue_severity``), a severity word among the rule's tags
(Trivy's), the ``security-severity`` score (result, then rule; as GitHub reads it),
and last the level: the result's, else the rule's default, else ``warning`` (SARIF
2.1.0 §3.27.10). Results with an ``inSource`` or ``external`` suppression that is not
rejected are kept but marked suppressed, so they never count against a gate.
"""

from __future__ import annotations

from typing import Any

from conveyor.orchestrator.errors import SarifError

from .results import Finding, ScanResult, build_result
from .severity import Severity, from_score, from_word

_LABELS = frozenset({"critical", "high", "medium", "moderate", "low"})


def parse(doc: Any, scanner: str | None = None) -> list[ScanResult]:
    """One ScanResult per run of the SARIF log ``doc`` (parsed JSON)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise SarifError("not a SARIF log: no runs array")
    return [_run(run, scanner) for run in doc["runs"] if isinstance(run, dict)]


def _run(run: dict[str, Any], scanner: str | None) -> ScanResult:
    driver = (run.get("tool") or {}).get("driver") or {}
    name = scanner or str(driver.get("name") or "sarif")
    rules = _rules(driver)
    findings = [_finding(r, rules, name) for r in run.get("results") or []]
    return build_result(name, findings, version=driver.get("version"), errors=_notifications(run))


def _rules(driver: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rules = driver.get("rules") or []
    found: dict[str, dict[str, Any]] = {}
    for position, rule in enumerate(rules):
        if isinstance(rule, dict):
            found[str(rule.get("id"))] = rule
            found[f"#{position}"] = rule
    return found


def _finding(result: dict[str, Any], rules: dict[str, dict[str, Any]], scanner: str) -> Finding:
    rule_id = str(result.get("ruleId") or (result.get("rule") or {}).get("id") or "unknown")
    rule = rules.get(rule_id) or rules.get(f"#{result.get('ruleIndex')}") or {}
    severity, native = _severity(result, rule)
    location, line, snippet = _where(result)
    return Finding(
        scanner=scanner,
        rule_id=rule_id,
        severity=severity,
        native_severity=native,
        message=str((result.get("message") or {}).get("text") or ""),
        location=location,
        line=line,
        snippet=snippet,
        help_uri=rule.get("helpUri"),
        suppressed=_suppressed(result),
    )


def _severity(result: dict[str, Any], rule: dict[str, Any]) -> tuple[Severity, str]:
    props, rule_props = result.get("properties") or {}, rule.get("properties") or {}
    for key in ("issue_severity", "severity"):
        if isinstance(props.get(key), str) and from_word(props[key]) is not Severity.UNKNOWN:
            return from_word(props[key]), props[key]
    for tag in rule_props.get("tags") or []:
        if isinstance(tag, str) and tag.lower() in _LABELS:
            return from_word(tag), tag
    score = props.get("security-severity") or rule_props.get("security-severity")
    if score is not None and from_score(score) is not Severity.UNKNOWN:
        return from_score(score), str(score)
    level = result.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
    level = level if isinstance(level, str) else "warning"
    return from_word(level), level


def _where(result: dict[str, Any]) -> tuple[str, int | None, str | None]:
    for location in result.get("locations") or []:
        physical = (location or {}).get("physicalLocation") or {}
        uri = (physical.get("artifactLocation") or {}).get("uri")
        if uri:
            region = physical.get("region") or {}
            line = region.get("startLine")
            snippet = (region.get("snippet") or {}).get("text")
            return str(uri), line if isinstance(line, int) else None, snippet
    return "", None, None


def _suppressed(result: dict[str, Any]) -> str | None:
    for entry in result.get("suppressions") or []:
        if isinstance(entry, dict) and entry.get("status") not in ("rejected", "underReview"):
            kind = entry.get("kind", "external")
            return str(entry.get("justification") or f"suppressed by the tool ({kind})")
    return None


def _notifications(run: dict[str, Any]) -> list[str]:
    errors = []
    for invocation in run.get("invocations") or []:
        for key in ("toolExecutionNotifications", "toolConfigurationNotifications"):
            for note in (invocation or {}).get(key) or []:
                if (note or {}).get("level", "warning") == "error":
                    errors.append(str((note.get("message") or {}).get("text") or "tool error"))
    return errors
