"""Grype (dependencies and container images), report as JSON in a file.

Command line, per Grype's README ("Supported sources", "Output formats"): the source
is a positional argument with a scheme (``dir:PATH``, ``docker-archive:FILE.tar``,
``registry:REF``, or a plain image reference the daemon or a registry has);
``-o json`` chooses the JSON presenter and ``--file FILE`` writes it to a file;
``--only-fixed`` drops vulnerabilities without a fix; ``--exclude GLOB`` skips paths.
Without ``--fail-on`` Grype exits 0 whatever it found, so any other code is a failure.
"""

from __future__ import annotations

from typing import Any

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

_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class Grype(ScannerBase):
    """``scanner.grype``."""

    name = "grype"
    default_image = "anchore/grype:latest"
    kinds = frozenset({ScanKind.DEPS, ScanKind.CONTAINER})
    binary = "grype"
    image_binary = "/grype"  # the official image is distroless: the binary is at the root

    def command(self, target: ScanTarget) -> ScanCommand:
        """``grype SOURCE -o json --file REPORT [--only-fixed] [--exclude …]``."""
        argv = [self.executable(target), _source(target), "-o", "json", "--file"]
        argv.append(target.report_path)
        if target.ignore_unfixed:
            argv.append("--only-fixed")
        if target.kind is ScanKind.DEPS:
            argv += ["--exclude", "./.conveyor/**"]
        return ScanCommand(tuple(argv), frozenset({0}))

    def parse(self, text: str) -> ScanResult:
        """Grype's JSON report."""
        data = expect(load_json(text, self.name), dict, self.name, "matches")
        matches = expect(data.get("matches"), list, self.name, "matches")
        version = (data.get("descriptor") or {}).get("version")
        findings = [_finding(m) for m in matches if isinstance(m, dict)]
        return build_result(self.name, findings, version=version)


def _source(target: ScanTarget) -> str:
    if target.kind is ScanKind.DEPS:
        return f"dir:{target.source_path}"
    image = target.target_image or ""
    if not image:
        raise StepFailed("a container scan needs target_image")
    scheme, colon, _ = image.partition(":")
    if colon and scheme in _SCHEMES:
        return image  # the user chose the source scheme
    if image.endswith(_ARCHIVE_SUFFIXES):
        return f"docker-archive:{image}"
    # In a container there is no Docker daemon to ask: read the image from its registry.
    return f"registry:{image}" if target.runner is Runner.DOCKER else image


#: Grype's source schemes (README, "Supported sources").
_SCHEMES = frozenset(
    {
        *("docker", "podman", "docker-archive", "oci-archive", "oci-dir", "singularity"),
        *("dir", "file", "registry", "sbom"),
    }
)


def _finding(match: dict[str, Any]) -> Finding:
    vuln = match.get("vulnerability") or {}
    artifact = match.get("artifact") or {}
    native = str(vuln.get("severity") or "")
    name, version = str(artifact.get("name") or ""), str(artifact.get("version") or "")
    fixed = _fixed(vuln.get("fix") or {})
    return Finding(
        scanner="grype",
        rule_id=str(vuln.get("id") or "unknown"),
        severity=from_word(native),
        native_severity=native,
        message=_message(vuln, name, version, fixed),
        location=_location(artifact),
        snippet=f"{artifact.get('type') or 'package'}:{name}",
        package=name,
        version=version,
        fixed_version=fixed,
        help_uri=vuln.get("dataSource") or None,
    )


def _fixed(fix: dict[str, Any]) -> str:
    """The fixed versions, or ``""`` when none is known (states not-fixed, wont-fix…)."""
    if fix.get("state") != "fixed":
        return ""
    return ", ".join(str(v) for v in fix.get("versions") or [])


def _location(artifact: dict[str, Any]) -> str:
    for location in artifact.get("locations") or []:
        path = (location or {}).get("path")
        if path:
            return relative(str(path))
    return str(artifact.get("purl") or artifact.get("name") or "")


def _message(vuln: dict[str, Any], name: str, version: str, fixed: str) -> str:
    text = f"{vuln.get('id')} in {name} {version}"
    text += f" (fixed in {fixed})" if fixed else " (no fix available)"
    description = str(vuln.get("description") or "").strip()
    return f"{text}: {description}" if description else text
