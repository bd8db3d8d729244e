"""What every scanner's output becomes: findings with stable fingerprints, and a summary.

A fingerprint must survive code moving around, so it is not the line number: it is a
hash of the scanner, the rule, the file (or package) and the text of the flagged line
with its whitespace collapsed, plus an occurrence index that tells apart two identical
lines in one file. When no text is known (Semgrep prints ``requires login`` instead of
the code to logged-out users), the step reads the line from the workspace; only when
that fails too does the line number stand in for it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from .severity import Severity

#: Placeholders scanners print where the code would be; they say nothing about it.
HIDDEN_SNIPPETS = frozenset({"", "requires login", "[line-hash]", "<masked in tests>"})

#: Reads line ``line`` of ``path`` (relative to the scanned tree), or None.
LineReader = Callable[[str, int], str | None]


class Finding(BaseModel):
    """One problem one scanner reported, on Conveyor's severity scale."""

    model_config = ConfigDict(extra="forbid")

    scanner: str
    rule_id: str = Field(description="The scanner's rule or advisory id (B602, CVE-2019-1549).")
    severity: Severity
    native_severity: str = Field(default="", description="The scanner's own word or score.")
    message: str = ""
    location: str = Field(description="File path, or the package and where it was found.")
    line: int | None = None
    snippet: str | None = Field(default=None, description="The flagged code (or package).")
    package: str | None = None
    version: str | None = None
    fixed_version: str | None = Field(default=None, description="Empty: no fix is known.")
    help_uri: str | None = None
    fingerprint: str = ""
    new: bool | None = Field(default=None, description="Absent from the baseline run.")
    suppressed: str | None = Field(default=None, description="Why it does not count.")


class ScanSummary(BaseModel):
    """Counts of the findings that count (not suppressed), by severity."""

    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    info: int = 0
    unknown: int = 0
    total: int = 0
    suppressed: int = 0
    new: int = 0


class ScanResult(BaseModel):
    """A scanner's whole report, normalised (the seed's ScanResult, extended)."""

    scanner: str
    scanner_version: str | None = None
    findings: list[Finding] = Field(default_factory=list)
    summary: ScanSummary = Field(default_factory=ScanSummary)
    passed_gate: bool = False
    #: Problems the scanner reported about itself (a file it could not parse…).
    errors: list[str] = Field(default_factory=list)
    #: What the scanner did not look at, and why (pip-audit's skip reasons…).
    skipped: list[str] = Field(default_factory=list)


def summarise(findings: Iterable[Finding]) -> ScanSummary:
    """Count findings by severity; suppressed ones only in ``suppressed``."""
    summary = ScanSummary()
    for finding in findings:
        if finding.suppressed:
            summary.suppressed += 1
            continue
        setattr(summary, finding.severity.value, getattr(summary, finding.severity.value) + 1)
        summary.total += 1
        summary.new += 1 if finding.new else 0
    return summary


def build_result(
    scanner: str,
    findings: Sequence[Finding],
    *,
    version: str | None = None,
    errors: Sequence[str] = (),
    skipped: Sequence[str] = (),
) -> ScanResult:
    """A ScanResult with fingerprints and summary filled in (the gate comes later)."""
    stamped = fingerprinted(findings)
    return ScanResult(
        scanner=scanner,
        scanner_version=version,
        findings=stamped,
        summary=summarise(stamped),
        errors=list(errors),
        skipped=list(skipped),
    )


def normalise_snippet(text: str | None) -> str | None:
    """The first non-blank line of ``text``, whitespace collapsed; None if it says nothing."""
    if text is None or text.strip().lower() in HIDDEN_SNIPPETS:
        return None
    for raw in text.splitlines():
        if raw.strip():
            return " ".join(raw.split())
    return None


def fingerprinted(findings: Sequence[Finding]) -> list[Finding]:
    """Findings with fingerprints: hash of scanner, rule, location, line text, occurrence."""
    seen: Counter[tuple[str, ...]] = Counter()
    result = []
    for finding in sorted(findings, key=_position):
        context = normalise_snippet(finding.snippet) or f"line:{finding.line or 0}"
        key = (finding.scanner, finding.rule_id, finding.location, context)
        seen[key] += 1
        digest = hashlib.sha256("\x00".join((*key, str(seen[key]))).encode("utf-8"))
        result.append(finding.model_copy(update={"fingerprint": digest.hexdigest()[:32]}))
    return result


def with_snippets(result: ScanResult, read_line: LineReader) -> ScanResult:
    """Fill in the code of findings whose scanner hid it, and fingerprint them again."""
    findings = [
        f
        if normalise_snippet(f.snippet) or f.line is None
        else f.model_copy(update={"snippet": read_line(f.location, f.line)})
        for f in result.findings
    ]
    return result.model_copy(update={"findings": fingerprinted(findings)})


def report_key(step_key: str, fmt: str) -> str:
    """The artifact key of a scan step's report: ``scans/<step>.sarif`` or ``.json``."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in step_key)
    return f"scans/{cleaned.lstrip('._-') or 'scan'}.{fmt}"


def _position(finding: Finding) -> tuple[str, int, str]:
    return (finding.location, finding.line or 0, finding.rule_id)
