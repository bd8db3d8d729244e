"""Trivy (container images and dependency manifests), report as JSON in a file.

Command line, per Trivy's CLI reference (``trivy image --help``, ``trivy fs --help``):
``--format json`` with ``--output FILE``; ``--scanners vuln`` (no secret scanning: other
steps do SAST); ``--ignore-unfixed`` (shorthand for ``--ignore-status affected,
will_not_fix,fix_deferred,end_of_life``); ``--input FILE.tar`` scans an image archive;
``--image-src remote`` reads the image from its registry (a sandbox has no daemon);
``--skip-dirs`` skips paths in ``fs`` mode; ``--quiet`` hides the progress bar.
Without ``--exit-code`` Trivy exits 0 whatever it found; any other code is a failure.
"""

from __future__ import annotations

from typing import Any

from conveyor.orchestrator.errors import ScanOutputError, StepFailed
from conveyor.orchestrator.scanning.results import Finding, ScanResult, build_result
from conveyor.orchestrator.scanning.scanner import Runner, ScanCommand, ScanKind, ScanTarget
from conveyor.orchestrator.scanning.severity import from_word

from .base import ScannerBase, expect, load_json

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class Trivy(ScannerBase):
    """``scanner.trivy``."""

    name = "trivy"
    default_image = "aquasec/trivy:latest"
    kinds = frozenset({ScanKind.CONTAINER, ScanKind.DEPS})
    binary = "trivy"

    def command(self, target: ScanTarget) -> ScanCommand:
        """``trivy image|fs --format json --output REPORT --scanners vuln … TARGET``."""
        common = ["--format", "json", "--output", target.report_path, "--scanners", "vuln"]
        common += ["--quiet", *(["--ignore-unfixed"] if target.ignore_unfixed else [])]
        if target.kind is ScanKind.DEPS:
            argv = ["fs", *common, "--skip-dirs", ".conveyor", target.source_path]
        else:
            argv = ["image", *common, *_image_source(target)]
        return ScanCommand((self.executable(target), *argv), frozenset({0}))

    def parse(self, text: str) -> ScanResult:
        """Trivy's JSON report (schema v2; older files without some keys too)."""
        data = expect(load_json(text, self.name), dict, self.name, "Results")
        if "Results" not in data and "SchemaVersion" not in data:
            raise ScanOutputError("trivy's report has no Results: is it trivy JSON?")
        results = data.get("Results") or []
        expect(results, list, self.name, "Results")
        version = (data.get("Trivy") or {}).get("Version")
        findings: list[Finding] = []
        for result in results:
            if isinstance(result, dict):
                findings += _vulnerabilities(result) + _misconfigurations(result)
        return build_result(self.name, findings, version=version)


def _image_source(target: ScanTarget) -> list[str]:
    image = target.target_image or ""
    if not image:
        raise StepFailed("a container scan needs target_image")
    if image.endswith(_ARCHIVE_SUFFIXES):
        return ["--input", image]
    if target.runner is Runner.DOCKER:
        return ["--image-src", "remote", image]
    return [image]


def _where(result: dict[str, Any]) -> str:
    """A location that stays put across builds: OS packages by distro, others by path.

    An OS package result's Target names the image (``myapp:1.2 (debian 12)``), and a
    new tag must not make every finding new.
    """
    if result.get("Class") == "os-pkgs":
        return f"os-pkgs ({result.get('Type') or 'os'})"
    return str(result.get("Target") or "")


def _vulnerabilities(result: dict[str, Any]) -> list[Finding]:
    found = []
    for vuln in result.get("Vulnerabilities") or []:
        native = str(vuln.get("Severity") or "")
        name, version = str(vuln.get("PkgName") or ""), str(vuln.get("InstalledVersion") or "")
        fixed = str(vuln.get("FixedVersion") or "")
        title = str(vuln.get("Title") or "").strip()
        message = f"{vuln.get('VulnerabilityID')} in {name} {version}"
        message += f" (fixed in {fixed})" if fixed else " (no fix available)"
        found.append(
            Finding(
                scanner="trivy",
                rule_id=str(vuln.get("VulnerabilityID") or "unknown"),
                severity=from_word(native),
                native_severity=native,
                message=f"{message}: {title}" if title else message,
                location=_where(result),
                snippet=f"{result.get('Type') or 'package'}:{name}",
                package=name,
                version=version,
                fixed_version=fixed,
                help_uri=vuln.get("PrimaryURL"),
            )
        )
    return found


def _misconfigurations(result: dict[str, Any]) -> list[Finding]:
    found = []
    for item in result.get("Misconfigurations") or []:
        if item.get("Status", "FAIL") != "FAIL":
            continue
        native = str(item.get("Severity") or "")
        line = (item.get("CauseMetadata") or {}).get("StartLine")
        title = str(item.get("Title") or "")
        message = str(item.get("Message") or item.get("Description") or "")
        found.append(
            Finding(
                scanner="trivy",
                rule_id=str(item.get("ID") or item.get("AVDID") or "unknown"),
                severity=from_word(native),
                native_severity=native,
                message=f"{title}: {message}" if title else message,
                location=str(result.get("Target") or ""),
                line=line if isinstance(line, int) and line > 0 else None,
                snippet=title or None,
                help_uri=item.get("PrimaryURL"),
            )
        )
    return found
