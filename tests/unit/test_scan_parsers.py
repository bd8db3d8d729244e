"""Every scanner's real output (tests/data/scanners, see its README) parsed into findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.orchestrator.errors import ScanOutputError
from conveyor.orchestrator.scanning.results import ScanResult
from conveyor.orchestrator.scanning.severity import Severity
from conveyor.providers.scanners.bandit import Bandit
from conveyor.providers.scanners.grype import Grype
from conveyor.providers.scanners.osv import OsvScanner
from conveyor.providers.scanners.pip_audit import PipAudit
from conveyor.providers.scanners.sarif import Sarif
from conveyor.providers.scanners.semgrep import Semgrep
from conveyor.providers.scanners.trivy import Trivy

DATA = Path(__file__).parents[1] / "data" / "scanners"
PARSERS = {
    "semgrep": Semgrep(),
    "bandit": Bandit(),
    "grype": Grype(),
    "trivy": Trivy(),
    "pip-audit": PipAudit(),
    "osv-scanner": OsvScanner(),
}


def parse(name: str) -> ScanResult:
    """Parse one fixture with the parser its name (or its .sarif suffix) calls for."""
    path = DATA / name
    if path.suffix == ".sarif":
        return Sarif().parse(path.read_text())
    parser = next(p for prefix, p in PARSERS.items() if name.startswith(prefix))
    return parser.parse(path.read_text())


def counts(result: ScanResult) -> dict[str, int]:
    """The non-zero severity counts of a result."""
    summary = result.summary.model_dump()
    return {
        k: summary[k]
        for k in ("critical", "high", "medium", "low", "info", "unknown")
        if summary[k]
    }


def test_every_fixture_parses_into_fingerprinted_findings() -> None:
    """Given every real scanner output, When parsed, Then each finding has a unique fingerprint."""
    files = sorted(p.name for p in DATA.iterdir() if p.suffix in (".json", ".sarif"))
    assert len(files) == 38
    for name in files:
        result = parse(name)
        prints = [f.fingerprint for f in result.findings]
        assert all(len(p) == 32 for p in prints), name
        assert len(set(prints)) == len(prints), name


def test_semgrep_json_maps_error_to_high_and_keeps_the_code() -> None:
    """Given Semgrep's JSON, When parsed, Then ERROR is high and the flagged code is the snippet."""
    result = parse("semgrep-basic.json")
    (finding,) = result.findings
    assert (finding.rule_id, finding.severity, finding.native_severity) == (
        "rules.eqeq-is-bad",
        Severity.HIGH,
        "ERROR",
    )
    assert (finding.location, finding.line) == ("targets/basic/stupid.py", 3)
    assert finding.snippet == "    return a + b == a + b"
    assert result.errors == []


def test_semgrep_logged_out_output_hides_the_code_but_fingerprints_the_same_finding() -> None:
    """Given the newer format ('requires login' instead of code), Then only the snippet is missing."""
    newer = parse("semgrep-basic-newer.json").findings[0]
    assert newer.snippet == "requires login"
    assert (newer.rule_id, newer.location, newer.line) == (
        "rules.eqeq-is-bad",
        "targets/basic/stupid.py",
        3,
    )


def test_semgrep_info_is_info_and_error_is_high() -> None:
    """Given a Semgrep run with ERROR and INFO results, Then they land on high and info."""
    result = parse("semgrep-join-error-info.json")
    assert counts(result) == {"high": 1, "info": 1}


def test_bandit_json_findings_carry_rule_line_and_the_flagged_line() -> None:
    """Given Bandit's JSON of 52 results, Then counts, paths without ./ and snippets are right."""
    result = parse("bandit-examples.json")
    assert counts(result) == {"high": 10, "medium": 21, "low": 21}
    assert result.errors == ["examples/nonsense.py: syntax error while parsing AST from file"]
    md2 = next(f for f in result.findings if f.rule_id == "B413" and f.line == 2)
    assert md2.location == "examples/crypto-md5.py"
    assert md2.snippet == "from Crypto.Hash import MD2 as pycrypto_md2"
    assert md2.message.endswith("(confidence: high)")
    assert md2.help_uri and "b413" in md2.help_uri


def test_bandit_sarif_without_level_for_medium_still_reads_medium() -> None:
    """Given Bandit's SARIF (no level on MEDIUM results), Then it counts as the JSON does."""
    assert counts(parse("bandit-examples.sarif")) == {"high": 10, "medium": 21, "low": 21}
    assert parse("bandit-examples.sarif").errors  # the syntax error notification


def test_trivy_image_scan_keeps_fixed_versions_and_a_tag_free_location() -> None:
    """Given Trivy's Debian scan, Then CRITICAL/LOW map and the unfixed one has no fix."""
    result = parse("trivy-debian-buster.json")
    by_id = {f.rule_id: f for f in result.findings}
    assert by_id["CVE-2019-18224"].severity is Severity.CRITICAL
    assert by_id["CVE-2019-18224"].fixed_version == "2.0.5-1+deb10u1"
    assert by_id["CVE-2019-18276"].severity is Severity.LOW
    assert by_id["CVE-2019-18276"].fixed_version == ""
    assert by_id["CVE-2019-18276"].package == "bash"
    assert {f.location for f in result.findings} == {"os-pkgs (debian)"}


def test_trivy_old_schema_without_status_or_version_parses() -> None:
    """Given a 2021 Trivy file missing newer keys, Then its 8 findings parse."""
    result = parse("trivy-alpine-310-ignore-unfixed-2021.json")
    assert counts(result) == {"medium": 6, "low": 2}
    assert result.scanner_version is None


def test_trivy_language_packages_and_misconfigurations() -> None:
    """Given Trivy's pip and Dockerfile results, Then packages and misconfigurations are findings."""
    pip = parse("trivy-pip.json")
    assert {(f.rule_id, f.severity.value, f.location) for f in pip.findings} == {
        ("CVE-2019-14806", "high", "requirements.txt"),
        ("CVE-2020-28724", "medium", "requirements.txt"),
    }
    (misconfig,) = parse("trivy-dockerfile-misconfig.json").findings
    assert (misconfig.rule_id, misconfig.severity, misconfig.location) == (
        "DS-0002",
        Severity.HIGH,
        "Dockerfile",
    )


def test_trivy_sarif_reads_the_severity_tag() -> None:
    """Given Trivy's SARIF (level warning, tag MEDIUM), Then four medium findings."""
    assert counts(parse("trivy-alpine-310.sarif")) == {"medium": 4}


def test_grype_empty_fix_state_means_no_fix() -> None:
    """Given Grype's image snapshot, Then Critical/Low map and an empty fix state is no fix."""
    result = parse("grype-image.json")
    by_id = {f.rule_id: f for f in result.findings}
    assert by_id["CVE-1999-0002"].severity is Severity.CRITICAL
    assert by_id["CVE-1999-0002"].fixed_version == ""
    assert by_id["CVE-1999-0001"].severity is Severity.LOW
    assert by_id["CVE-1999-0001"].fixed_version == "1.2.1, 2.1.3, 3.4.0"
    assert parse("grype-empty.json").findings == []


def test_grype_wont_fix_and_unknown_states_have_no_fix() -> None:
    """Given Grype's keycloak scan (wont-fix) and the GHSA one, Then fixes follow fix.state."""
    keycloak = parse("grype-keycloak-wontfix.json")
    assert counts(keycloak) == {"low": 6}
    assert {f.fixed_version for f in keycloak.findings} == {""}
    java = parse("grype-java-ghsa.json")
    fixes = {f.rule_id: f.fixed_version for f in java.findings}
    assert fixes == {"GHSA-cfh5-3ghh-wfjx": "4.3.5", "CVE-2014-3577": ""}


def test_grype_sarif_follows_security_severity_as_github_does() -> None:
    """Given Grype's SARIF (score 8.2 on a Low match), Then the score decides, as on GitHub."""
    assert counts(parse("grype-image.sarif")) == {"high": 2}


def test_pip_audit_findings_are_unknown_and_skips_are_listed() -> None:
    """Given pip-audit outputs, Then vulns have no rating and skipped deps are reported."""
    fix = parse("pip-audit-project-fix.json")
    assert counts(fix) == {"unknown": 3}
    bar = next(f for f in fix.findings if f.package == "bar")
    assert (bar.rule_id, bar.fixed_version) == ("VULN-2", "")
    foo = next(f for f in fix.findings if f.rule_id == "VULN-0")
    assert foo.fixed_version == "1.1, 1.4"
    assert "CVE-0000-00000" in foo.message
    skipped = parse("pip-audit-all-skipped.json")
    assert skipped.findings == [] and len(skipped.skipped) == 3
    assert parse("pip-audit-defectdojo-many-vulns.json").summary.unknown == 7


def test_osv_scanner_groups_aliases_and_scores_cvss_vectors() -> None:
    """Given osv-scanner JSON, Then one finding per group, rated by CVSS vector or label."""
    result = parse("osv-scanner-go-rust.json")
    regex = next(f for f in result.findings if f.package == "regex")
    assert regex.severity is Severity.HIGH
    assert regex.fixed_version == "1.5.5"
    go = next(f for f in result.findings if f.package == "github.com/gogo/protobuf")
    assert go.rule_id == "GO-2021-0053" and go.fixed_version == "1.3.2"


def test_osv_scanner_max_severity_score_and_moderate_label() -> None:
    """Given a numeric max_severity and a GHSA MODERATE label, Then high and medium."""
    (one,) = parse("osv-scanner-max-severity.json").findings
    assert (one.severity, one.native_severity) == (Severity.HIGH, "8.3")
    filtered = parse("osv-scanner-filtered-debian-go-rust.json")
    assert Severity.MEDIUM in {f.severity for f in filtered.findings}
    assert parse("osv-scanner-empty.json").findings == []


def test_semgrep_sarif_resolves_level_from_the_rule_and_honours_nosemgrep() -> None:
    """Given Semgrep SARIF, Then the rule's level applies and an inSource suppression is kept out."""
    assert counts(parse("semgrep-basic.sarif")) == {"high": 1}
    assert counts(parse("semgrep-dataflow-warning.sarif")) == {"medium": 1}
    suppressed = parse("semgrep-nosemgrep-suppressed.sarif")
    assert counts(suppressed) == {"high": 1}
    assert suppressed.summary.suppressed == 1
    errors = parse("semgrep-errors.sarif")
    assert errors.findings == [] and len(errors.errors) == 1


@pytest.mark.parametrize("parser", [*PARSERS.values(), Sarif()], ids=lambda p: p.name)
@pytest.mark.parametrize("text", ["", "not json {", "[1, 2]", '{"unrelated": true}'])
def test_unparseable_reports_raise_scan_output_errors(parser: object, text: str) -> None:
    """Given garbage instead of a report, When parsed, Then ScanOutputError names the scanner."""
    with pytest.raises(ScanOutputError):
        parser.parse(text)  # type: ignore[attr-defined]
