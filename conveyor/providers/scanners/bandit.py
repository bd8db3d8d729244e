"""Bandit (SAST for Python): ``bandit -r``, report as JSON in a file.

Command line, per Bandit's docs (``bandit --help``, "Getting started"): ``-r`` to
recurse into the source directory, ``-f json`` for the JSON formatter, ``-o FILE`` to
write the report to a file, ``-q`` for no banner. ``-c FILE`` reads a config file
(``rules`` here: a bandit YAML or pyproject.toml in the workspace). Bandit exits 1
when it found issues, which is not a failure of the tool; anything but 0 and 1 is.
"""

from __future__ import annotations

from typing import Any

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.scanning.results import Finding, ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import ScanCommand, ScanKind, ScanTarget
from conveyor.orchestrator.scanning.severity import from_word

from .base import ScannerBase, expect, load_json, relative


class Bandit(ScannerBase):
    """``scanner.bandit``."""

    name = "bandit"
    default_image = "ghcr.io/pycqa/bandit/bandit:latest"
    kinds = frozenset({ScanKind.SAST})
    binary = "bandit"

    def command(self, target: ScanTarget) -> ScanCommand:
        """``bandit -r SOURCE -f json -o REPORT -q [-c CONFIG]``."""
        if len(target.rules) > 1:
            raise StepFailed("bandit takes one config file in rules (a bandit YAML or TOML)")
        config = ("-c", target.rules[0]) if target.rules else ()
        argv = (
            self.executable(target),
            "-r",
            target.source_path,
            "-f",
            "json",
            "-o",
            target.report_path,
            "-q",
            *config,
        )
        return ScanCommand(argv, frozenset({0, 1}))

    def parse(self, text: str) -> ScanResult:
        """Bandit's JSON report."""
        data = expect(load_json(text, self.name), dict, self.name, "results")
        results = expect(data.get("results"), list, self.name, "results")
        errors = [
            f"{relative(str(e.get('filename', '')))}: {e.get('reason', 'error')}"
            for e in data.get("errors") or []
            if isinstance(e, dict)
        ]
        findings = [_finding(r) for r in results if isinstance(r, dict)]
        return build_result(self.name, findings, errors=errors)


def _finding(result: dict[str, Any]) -> Finding:
    native = str(result.get("issue_severity") or "")
    line = result.get("line_number")
    confidence = result.get("issue_confidence")
    message = str(result.get("issue_text") or "")
    return Finding(
        scanner="bandit",
        rule_id=str(result.get("test_id") or "unknown"),
        severity=from_word(native),
        native_severity=native,
        message=f"{message} (confidence: {confidence.lower()})" if confidence else message,
        location=relative(str(result.get("filename") or "")),
        line=line if isinstance(line, int) else None,
        snippet=_line_of(str(result.get("code") or ""), line),
        help_uri=result.get("more_info"),
    )


def _line_of(code: str, line: Any) -> str | None:
    """The flagged line out of Bandit's numbered context (``3 import x\\n4 eval(y)``)."""
    for entry in code.splitlines():
        number, _, text = entry.partition(" ")
        if number.isdigit() and int(number) == line:
            return text
    return None
