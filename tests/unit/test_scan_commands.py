"""The command lines scanner providers build, checked against each tool's documented flags.

Flags, from each tool's CLI reference (also cited in each provider's docstring):
semgrep ``scan --config --json --output --metrics=off --disable-version-check --exclude``;
bandit ``-r -f json -o -q -c``; trivy ``image|fs --format json --output --scanners
--quiet --ignore-unfixed --input --image-src --skip-dirs``; grype ``SOURCE -o json --file
--only-fixed --exclude`` with ``dir:``/``docker-archive:``/``registry:`` sources;
pip-audit ``-r -f json -o --progress-spinner --aliases --desc``; osv-scanner ``scan source
-r --format json --output``.
"""

from __future__ import annotations

import pytest

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.scanning.scanner import Runner, ScanKind, ScanTarget
from conveyor.providers.scanners.bandit import Bandit
from conveyor.providers.scanners.grype import Grype
from conveyor.providers.scanners.osv import OsvScanner
from conveyor.providers.scanners.pip_audit import PipAudit
from conveyor.providers.scanners.semgrep import Semgrep
from conveyor.providers.scanners.trivy import Trivy

REPORT = ".conveyor/scans/s-1.json"


def target(kind: ScanKind, **kwargs: object) -> ScanTarget:
    """A docker-runner target writing to REPORT."""
    return ScanTarget(kind=kind, runner=Runner.DOCKER, report_path=REPORT, **kwargs)  # type: ignore[arg-type]


def test_semgrep_runs_local_rules_offline_into_a_report_file() -> None:
    """Given local rules, Then semgrep scan writes JSON to the report with nothing phoning home."""
    command = Semgrep().command(target(ScanKind.SAST, source_path="src", rules=("r.yaml", "more/")))
    assert command.argv == (
        "semgrep",
        "scan",
        "--config",
        "r.yaml",
        "--config",
        "more/",
        "--json",
        "--output",
        REPORT,
        "--metrics=off",
        "--disable-version-check",
        "--exclude=.conveyor",
        "src",
    )
    assert command.ok_exit_codes == {0, 1}
    assert command.env["SEMGREP_SEND_METRICS"] == "off"


def test_semgrep_registry_rules_without_a_network_fail_at_once() -> None:
    """Given p/owasp-top-ten in a container with no network, Then preflight refuses clearly."""
    scan = target(ScanKind.SAST, rules=("p/owasp-top-ten",))
    with pytest.raises(
        StepFailed, match=r"p/owasp-top-ten come from the Semgrep registry.*network"
    ):
        Semgrep().preflight(scan, {})


def test_semgrep_registry_rules_on_a_host_that_cannot_reach_it_fail_clearly() -> None:
    """Given registry rules, a local runner and an unreachable registry, Then a clear failure."""
    scan = ScanTarget(ScanKind.SAST, Runner.LOCAL, rules=("p/python",))
    with pytest.raises(StepFailed, match=r"cannot reach .*use local rule files"):
        Semgrep().preflight(scan, {"SEMGREP_URL": "http://127.0.0.1:9"})


def test_bandit_recurses_and_writes_json() -> None:
    """Given a source dir and a config file, Then bandit -r with -f json -o and -c."""
    command = Bandit().command(target(ScanKind.SAST, source_path="src", rules=("bandit.yaml",)))
    assert command.argv == (
        "bandit",
        "-r",
        "src",
        "-f",
        "json",
        "-o",
        REPORT,
        "-q",
        "-c",
        "bandit.yaml",
    )
    assert command.ok_exit_codes == {0, 1}  # 1: issues found


def test_trivy_image_in_a_container_reads_the_registry() -> None:
    """Given an image reference and the docker runner, Then trivy image --image-src remote."""
    command = Trivy().command(
        target(ScanKind.CONTAINER, target_image="myapp:1.0", ignore_unfixed=True)
    )
    assert command.argv == (
        "trivy",
        "image",
        "--format",
        "json",
        "--output",
        REPORT,
        "--scanners",
        "vuln",
        "--quiet",
        "--ignore-unfixed",
        "--image-src",
        "remote",
        "myapp:1.0",
    )


def test_trivy_image_archive_and_fs_mode() -> None:
    """Given an archive in the workspace, Then --input; given a deps scan, Then trivy fs."""
    archive = Trivy().command(target(ScanKind.CONTAINER, target_image="build/app.tar"))
    assert archive.argv[-2:] == ("--input", "build/app.tar")
    deps = Trivy().command(target(ScanKind.DEPS, source_path="."))
    assert deps.argv[1] == "fs" and deps.argv[-3:] == ("--skip-dirs", ".conveyor", ".")


def test_grype_sources_by_scheme() -> None:
    """Given deps, an archive, a reference and an explicit scheme, Then grype's source forms."""
    deps = Grype().command(target(ScanKind.DEPS, source_path="app", ignore_unfixed=True))
    assert deps.argv == (
        "/grype",
        "dir:app",
        "-o",
        "json",
        "--file",
        REPORT,
        "--only-fixed",
        "--exclude",
        "./.conveyor/**",
    )
    assert deps.ok_exit_codes == {0}
    sources = [
        Grype().command(target(ScanKind.CONTAINER, target_image=image)).argv[1]
        for image in ("app.tar", "myapp:1.0", "oci-dir:build/oci")
    ]
    assert sources == ["docker-archive:app.tar", "registry:myapp:1.0", "oci-dir:build/oci"]


def test_pip_audit_requirements_file_or_project() -> None:
    """Given a requirements file, Then -r; given a directory, Then it is the project path."""
    command = PipAudit().command(target(ScanKind.DEPS, source_path="requirements.txt"))
    assert command.argv[:3] == ("pip-audit", "-r", "requirements.txt")
    assert command.argv[3:7] == ("-f", "json", "-o", REPORT)
    assert PipAudit().command(target(ScanKind.DEPS, source_path=".")).argv[1] == "."


def test_osv_scanner_scans_the_source_recursively() -> None:
    """Given a deps scan, Then osv-scanner scan source -r with JSON to the report."""
    command = OsvScanner().command(target(ScanKind.DEPS, source_path="."))
    assert command.argv == (
        "/osv-scanner",
        "scan",
        "source",
        "-r",
        ".",
        "--format",
        "json",
        "--output",
        REPORT,
    )


def test_a_scanner_refuses_a_kind_it_does_not_do() -> None:
    """Given bandit asked for a container scan, Then preflight says what bandit does."""
    with pytest.raises(StepFailed, match="bandit does not do container scans"):
        Bandit().preflight(target(ScanKind.CONTAINER, target_image="x"), {})
