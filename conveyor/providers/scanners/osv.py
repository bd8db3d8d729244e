"""osv-scanner (dependencies of many ecosystems), report as JSON in a file.

Command line, per osv-scanner v2's docs ("Usage", "Output"): ``scan source -r PATH``
scans a directory recursively for lockfiles; ``--format json`` with ``--output FILE``
writes the JSON report to a file. It exits 1 when it found vulnerabilities (not a
failure) and 128 when it found no package to scan (a failure: nothing was audited).

One finding per package and vulnerability group (a group is one vulnerability under
all its aliases). Severity: the group's ``max_severity`` score, else the worst CVSS v3
vector among its records, else the advisory's label (GHSA ``MODERATE``…), else unknown.
"""

from __future__ import annotations

from typing import Any

from conveyor.orchestrator.scanning.cvss import base_score
from conveyor.orchestrator.scanning.results import Finding, ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import ScanCommand, ScanKind, ScanTarget
from conveyor.orchestrator.scanning.severity import Severity, from_score, from_word

from .base import ScannerBase, expect, load_json, relative


class OsvScanner(ScannerBase):
    """``scanner.osv-scanner``."""

    name = "osv-scanner"
    default_image = "ghcr.io/google/osv-scanner:latest"
    kinds = frozenset({ScanKind.DEPS})
    binary = "osv-scanner"
    image_binary = "/osv-scanner"

    def command(self, target: ScanTarget) -> ScanCommand:
        """``osv-scanner scan source -r SOURCE --format json --output REPORT``."""
        argv = (
            self.executable(target),
            "scan",
            "source",
            "-r",
            target.source_path,
            "--format",
            "json",
            "--output",
            target.report_path,
        )
        return ScanCommand(argv, frozenset({0, 1}))

    def parse(self, text: str) -> ScanResult:
        """osv-scanner's JSON report."""
        data = expect(load_json(text, self.name), dict, self.name, "results")
        results = expect(data.get("results"), list, self.name, "results")
        findings = [
            finding
            for source in results
            if isinstance(source, dict)
            for package in source.get("packages") or []
            for finding in _package(source.get("source") or {}, package)
        ]
        return build_result(self.name, findings)


def _package(source: dict[str, Any], entry: dict[str, Any]) -> list[Finding]:
    package = entry.get("package") or {}
    vulns = {str(v.get("id")): v for v in entry.get("vulnerabilities") or []}
    groups = entry.get("groups") or [{"ids": [i]} for i in vulns]
    return [_group(source, package, group, vulns) for group in groups if group.get("ids")]


def _group(
    source: dict[str, Any], package: dict[str, Any], group: dict[str, Any], vulns: dict[str, Any]
) -> Finding:
    ids = [str(i) for i in group["ids"]]
    records = [vulns[i] for i in ids if i in vulns]
    severity, native = _severity(group, records)
    name, version = str(package.get("name") or ""), str(package.get("version") or "")
    fixed = _fixed(records, name)
    summary = next((str(r["summary"]) for r in records if r.get("summary")), "")
    message = f"{ids[0]} in {name} {version}" + (f" [also {', '.join(ids[1:])}]" if ids[1:] else "")
    ecosystem = str(package.get("ecosystem") or "package")
    return Finding(
        scanner="osv-scanner",
        rule_id=ids[0],
        severity=severity,
        native_severity=native,
        message=f"{message}: {summary}" if summary else message,
        location=relative(str(source.get("path") or "")),
        snippet=f"{ecosystem}:{name}",
        package=name,
        version=version,
        fixed_version=fixed,
        help_uri=f"https://osv.dev/{ids[0]}",
    )


def _severity(group: dict[str, Any], records: list[dict[str, Any]]) -> tuple[Severity, str]:
    if from_score(group.get("max_severity")) is not Severity.UNKNOWN:
        return from_score(group["max_severity"]), str(group["max_severity"])
    scores = [
        score
        for record in records
        for entry in record.get("severity") or []
        if (score := base_score(str(entry.get("score") or ""))) is not None
    ]
    if scores:
        return from_score(max(scores)), str(max(scores))
    for record in records:
        label = (record.get("database_specific") or {}).get("severity")
        if from_word(label) is not Severity.UNKNOWN:
            return from_word(label), str(label)
    return Severity.UNKNOWN, ""


def _fixed(records: list[dict[str, Any]], name: str) -> str:
    """The versions that fix the package, from the records' affected ranges."""
    found: list[str] = []
    for record in records:
        for affected in record.get("affected") or []:
            if (affected.get("package") or {}).get("name") != name:
                continue
            for span in affected.get("ranges") or []:
                found += [str(e["fixed"]) for e in span.get("events") or [] if "fixed" in e]
    return ", ".join(dict.fromkeys(found))
