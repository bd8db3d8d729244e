"""Semgrep (SAST): ``semgrep scan`` with local rule files or registry rule packs.

Command line, per Semgrep's CLI reference (``semgrep scan --help``): ``--config`` (a
rule file, a directory of rules, or a registry name such as ``p/owasp-top-ten``; may
repeat), ``--json`` with ``--output FILE`` to write the report to a file,
``--metrics=off`` and ``--disable-version-check`` so that nothing phones home, and
``--exclude`` to skip Conveyor's own directory. Exit codes: 0 (done), 1 (findings,
only with ``--error``, which is not passed); anything else is a failure (2: fatal,
4: bad pattern, 5/7: bad or missing config…).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.scanning.results import Finding, ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import (
    Runner,
    ScanCommand,
    ScanKind,
    ScanTarget,
)
from conveyor.orchestrator.scanning.severity import from_word

from .base import ScannerBase, expect, load_json, relative

#: Registry rule packs: ``p/…`` (packs), ``r/…`` (rules), ``s/…`` (snippets), ``auto``.
_REGISTRY_PREFIXES = ("p/", "r/", "s/", "c/", "http://", "https://")
#: Where Semgrep fetches registry rules unless SEMGREP_URL says otherwise (its default).
REGISTRY_URL = "https://semgrep.dev"
PROBE_SECONDS = 3.0


def is_registry_rule(rule: str) -> bool:
    """True for rules Semgrep downloads (``p/owasp-top-ten``, ``auto``), not local files."""
    return rule == "auto" or rule.startswith(_REGISTRY_PREFIXES)


class Semgrep(ScannerBase):
    """``scanner.semgrep``."""

    name = "semgrep"
    default_image = "semgrep/semgrep:latest"
    kinds = frozenset({ScanKind.SAST})
    binary = "semgrep"

    def command(self, target: ScanTarget) -> ScanCommand:
        """``semgrep scan --config R… --json --output REPORT … SOURCE``."""
        configs = [arg for rule in target.rules or ("auto",) for arg in ("--config", rule)]
        argv = (
            self.executable(target),
            "scan",
            *configs,
            "--json",
            "--output",
            target.report_path,
            "--metrics=off",
            "--disable-version-check",
            "--exclude=.conveyor",
            target.source_path,
        )
        # Belt and braces for versions whose flags differ: the same wishes as env vars.
        env = {"SEMGREP_SEND_METRICS": "off", "SEMGREP_ENABLE_VERSION_CHECK": "0"}
        return ScanCommand(argv, frozenset({0, 1}), env)

    def preflight(self, target: ScanTarget, env: Mapping[str, str]) -> None:
        """Registry rules need the network: refuse at once where there is none."""
        super().preflight(target, env)
        remote = [rule for rule in target.rules or ("auto",) if is_registry_rule(rule)]
        if not remote:
            return
        names = ", ".join(remote)
        if target.runner is Runner.DOCKER and (target.network_mode or "none") == "none":
            raise StepFailed(
                f"semgrep rules {names} come from the Semgrep registry, which needs the "
                "network, and the scanner's container has none: use local rule files "
                "(rules: [path/in/the/repo.yaml]) or set network_mode"
            )
        url = env.get("SEMGREP_URL") or REGISTRY_URL
        if not _reachable(url):
            raise StepFailed(
                f"semgrep rules {names} come from the Semgrep registry at {url}, which this "
                "host cannot reach (no network?): use local rule files instead "
                "(rules: [path/in/the/repo.yaml])"
            )

    def parse(self, text: str) -> ScanResult:
        """Semgrep's ``--json`` report."""
        data = expect(load_json(text, self.name), dict, self.name, "results")
        results = expect(data.get("results"), list, self.name, "results")
        errors = [_error(e) for e in data.get("errors") or [] if isinstance(e, dict)]
        findings = [_finding(r) for r in results if isinstance(r, dict)]
        return build_result(self.name, findings, version=data.get("version"), errors=errors)


def _finding(result: dict[str, Any]) -> Finding:
    extra = result.get("extra") or {}
    native = str(extra.get("severity") or "")
    return Finding(
        scanner="semgrep",
        rule_id=str(result.get("check_id") or "unknown"),
        severity=from_word(native),
        native_severity=native,
        message=str(extra.get("message") or ""),
        location=relative(str(result.get("path") or "")),
        line=(result.get("start") or {}).get("line"),
        snippet=extra.get("lines") if isinstance(extra.get("lines"), str) else None,
        help_uri=_help(extra.get("metadata") or {}),
    )


def _help(metadata: dict[str, Any]) -> str | None:
    for key in ("source", "shortlink"):
        if isinstance(metadata.get(key), str):
            return str(metadata[key])
    references = metadata.get("references")
    return str(references[0]) if isinstance(references, list) and references else None


def _error(error: dict[str, Any]) -> str:
    where = relative(str(error.get("path") or ""))
    text = str(error.get("message") or error.get("type") or "error").strip().splitlines()[0]
    return f"{error.get('level', 'error')}: {text}" + (f" ({where})" if where else "")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False
