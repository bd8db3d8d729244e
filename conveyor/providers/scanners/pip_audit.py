"""pip-audit (Python dependencies), report as JSON in a file.

Command line, per pip-audit's README (``pip-audit --help``): ``-r FILE`` audits a
requirements file, a positional ``project_path`` audits a project (pyproject.toml);
``-f json`` with ``-o FILE`` writes the JSON report to a file; ``--progress-spinner
off`` keeps the log clean; ``--aliases on`` and ``--desc on`` add CVE aliases and
descriptions. pip-audit exits 1 when it found vulnerabilities, which is not a failure.

pip-audit rates nothing: every finding is ``unknown`` on Conveyor's scale, which a gate
ranks as ``high`` unless the step sets ``unknown_severity``. Dependencies it could not
audit (``skip_reason``) are listed in the result's ``skipped``, and the step logs them:
"nothing found" about packages nobody looked at is not a pass to trust.
"""

from __future__ import annotations

from typing import Any

from conveyor.orchestrator.scanning.results import Finding, ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import ScanCommand, ScanKind, ScanTarget
from conveyor.orchestrator.scanning.severity import Severity

from .base import ScannerBase, expect, load_json


class PipAudit(ScannerBase):
    """``scanner.pip-audit``."""

    name = "pip-audit"
    default_image = None  # the project publishes no image: name one with pip-audit in it
    kinds = frozenset({ScanKind.DEPS})
    binary = "pip-audit"

    def command(self, target: ScanTarget) -> ScanCommand:
        """``pip-audit -r FILE | PROJECT -f json -o REPORT …``."""
        source = target.source_path
        what = ["-r", source] if source.endswith((".txt", ".in")) else [source]
        argv = (
            self.executable(target),
            *what,
            "-f",
            "json",
            "-o",
            target.report_path,
            "--progress-spinner",
            "off",
            "--aliases",
            "on",
            "--desc",
            "on",
        )
        return ScanCommand(argv, frozenset({0, 1}))

    def parse(self, text: str) -> ScanResult:
        """pip-audit's JSON report (with or without ``fixes`` and ``aliases``)."""
        data = load_json(text, self.name)
        deps = expect(
            data.get("dependencies") if isinstance(data, dict) else None,
            list,
            self.name,
            "dependencies",
        )
        findings: list[Finding] = []
        skipped: list[str] = []
        for dep in deps:
            if not isinstance(dep, dict):
                continue
            if dep.get("skip_reason"):
                skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
            findings += [_finding(dep, vuln) for vuln in dep.get("vulns") or []]
        return build_result(self.name, findings, skipped=skipped)


def _finding(dep: dict[str, Any], vuln: dict[str, Any]) -> Finding:
    name, version = str(dep.get("name") or ""), str(dep.get("version") or "")
    fixed = ", ".join(str(v) for v in vuln.get("fix_versions") or [])
    aliases = [str(a) for a in vuln.get("aliases") or []]
    message = f"{vuln.get('id')} in {name} {version}"
    message += f" (fixed in {fixed})" if fixed else " (no fix available)"
    if aliases:
        message += f" [also {', '.join(aliases)}]"
    description = str(vuln.get("description") or "").strip()
    return Finding(
        scanner="pip-audit",
        rule_id=str(vuln.get("id") or "unknown"),
        severity=Severity.UNKNOWN,
        native_severity="",
        message=f"{message}: {description}" if description else message,
        location=f"pypi:{name}",
        snippet=f"pypi:{name}",
        package=name,
        version=version,
        fixed_version=fixed,
    )
