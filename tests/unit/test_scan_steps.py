"""The scan steps with a real local sandbox and the generic SARIF scanner (a shell command).

Real Semgrep and Bandit runs are in tests/integration/test_scan_tools.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.errors import StepFailed, StepTimeout
from conveyor.orchestrator.scanning import sarif
from conveyor.orchestrator.scanning.results import Finding, build_result
from conveyor.orchestrator.scanning.severity import Severity
from conveyor.steps.scan.container import ScanContainer, ScanContainerConfig
from conveyor.steps.scan.deps import ScanDepsConfig
from conveyor.steps.scan.sast import ScanSast, ScanSastConfig
from tests.unit.fakes import FakeContext


def sarif_log(*findings: tuple[str, Severity, str, int]) -> str:
    """A SARIF log with one result per (rule, severity, path, line)."""
    result = build_result(
        "tool",
        [
            Finding(scanner="tool", rule_id=r, severity=s, location=p, line=n, snippet=f"{r}()")
            for r, s, p, n in findings
        ],
    )
    return json.dumps(sarif.render(result))


def write(ctx: FakeContext, name: str, text: str) -> None:
    """Put a file in the run's workspace."""
    path = ctx.workspace / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def sast(ctx: FakeContext, command: str, **config: Any) -> dict[str, Any]:
    """Run step.scan_sast with the generic scanner and ``command``, locally."""
    cfg = ScanSastConfig.model_validate(
        {"scanner": "sarif", "runner": "local", "command": command, **config}
    )
    return dict(ScanSast().run(ctx, cfg))


REPORT_FROM = 'cp report.sarif "$CONVEYOR_SCAN_REPORT"'


def test_a_passing_scan_outputs_summary_gate_and_stored_reports(tmp_path: Path) -> None:
    """Given two low findings, When scanned at threshold high, Then it passes with outputs."""
    ctx = FakeContext(tmp_path)
    write(
        ctx,
        "report.sarif",
        sarif_log(("a", Severity.LOW, "x.py", 1), ("b", Severity.LOW, "y.py", 2)),
    )
    outputs = sast(ctx, REPORT_FROM)
    assert outputs["passed_gate"] is True
    assert outputs["summary"]["low"] == 2 and outputs["summary"]["total"] == 2
    assert outputs["scan_result"]["passed_gate"] is True
    assert outputs["command"] == REPORT_FROM and outputs["image"] == ""
    assert outputs["report"] == "scans/build.sarif"
    stored = ctx.artifacts.list(ctx.run_id)
    assert {a.key for a in stored} == {"scans/build.sarif", "scans/build.json"}
    ((recorded, branch),) = ctx.findings.recorded
    assert recorded.summary.low == 2 and branch is None


def test_a_failing_gate_names_the_counts_and_still_records(tmp_path: Path) -> None:
    """Given a high finding, When gated at error, Then the step fails naming it, findings kept."""
    ctx = FakeContext(tmp_path)
    write(ctx, "report.sarif", sarif_log(("eval", Severity.HIGH, "x.py", 1)))
    with pytest.raises(StepFailed, match=r"1 finding \(1 high\) at or above high \(gate: "):
        sast(ctx, REPORT_FROM, fail_on_severity="error")
    assert ctx.findings.recorded[0][0].passed_gate is False
    assert any("HIGH     eval x.py:1" in line for line in ctx.log.lines)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("echo 'segfault in the analyser'; exit 3", r"sarif failed \(exit code 3\): segfault"),
        ("echo '{not json' > \"$CONVEYOR_SCAN_REPORT\"", r"cannot be parsed .*not JSON"),
        ('echo \'{"no": "runs"}\' > "$CONVEYOR_SCAN_REPORT"', r"cannot be parsed .*not SARIF"),
        ("true", r"exited without writing its report"),
    ],
)
def test_a_broken_scanner_fails_the_step_and_never_passes(
    tmp_path: Path, command: str, message: str
) -> None:
    """Given a scanner that crashes or writes junk, When run, Then the step fails saying so."""
    ctx = FakeContext(tmp_path)
    with pytest.raises(StepFailed, match=message) as raised:
        sast(ctx, command)
    assert "the gate did not pass" in raised.value.message
    assert ctx.findings.recorded == []


def test_a_scanner_that_times_out_fails_the_step(tmp_path: Path) -> None:
    """Given a scanner slower than the step's timeout, When run, Then a timeout failure."""
    ctx = FakeContext(tmp_path)
    with pytest.raises(StepTimeout, match=r"sarif timed out .*the gate did not pass"):
        sast(ctx, "sleep 30", timeout="0.5s")
    assert ctx.findings.recorded == []


def test_fail_on_new_fails_only_on_findings_the_baseline_lacks(tmp_path: Path) -> None:
    """Given a baseline holding one of two high findings, When fail_on new, Then one new fails."""
    ctx = FakeContext(tmp_path, params={"branch": "main"})
    log = sarif_log(("old", Severity.HIGH, "x.py", 1), ("fresh", Severity.HIGH, "x.py", 5))
    write(ctx, "report.sarif", log)
    old = next(f for f in sarif_parse(log) if f.rule_id == "old")
    ctx.findings.add_run("earlier", "main", [old.fingerprint])
    ctx.findings.add_run("elsewhere", "feature", [])
    with pytest.raises(StepFailed, match=r"1 new finding \(1 high\)"):
        sast(ctx, REPORT_FROM, fail_on="new")
    recorded = ctx.findings.recorded[0][0]
    assert {f.rule_id: f.new for f in recorded.findings} == {"old": False, "fresh": True}
    assert "compared with run earlier: 1 new finding(s)" in ctx.log.lines


def test_fail_on_new_without_a_baseline_sets_one(tmp_path: Path) -> None:
    """Given no earlier run on the branch, When fail_on new, Then it passes and says why."""
    ctx = FakeContext(tmp_path, params={"branch": "topic"})
    write(ctx, "report.sarif", sarif_log(("x", Severity.CRITICAL, "x.py", 1)))
    outputs = sast(ctx, REPORT_FROM, fail_on="new")
    assert outputs["passed_gate"] is True and outputs["baseline_run"] is None
    assert any("this run sets the baseline" in line for line in ctx.log.lines)


def test_baseline_branch_is_the_fallback_for_a_new_branch(tmp_path: Path) -> None:
    """Given a new branch and baseline_branch main, Then main's last run is the baseline."""
    ctx = FakeContext(tmp_path, params={"branch": "topic"})
    write(ctx, "report.sarif", sarif_log(("x", Severity.CRITICAL, "x.py", 1)))
    ctx.findings.add_run("main-run", "main", [])
    with pytest.raises(StepFailed, match="1 new finding"):
        sast(ctx, REPORT_FROM, fail_on="new", baseline_branch="main")


def test_suppressions_waive_and_expired_ones_count_again(tmp_path: Path) -> None:
    """Given a live and an expired waiver in the repository, Then one waives, one is logged."""
    ctx = FakeContext(tmp_path)
    write(
        ctx,
        "report.sarif",
        sarif_log(("a", Severity.HIGH, "x.py", 1), ("b", Severity.HIGH, "y.py", 1)),
    )
    write(
        ctx,
        ".conveyor-suppressions.yaml",
        "suppressions:\n"
        "  - {rule: a, reason: accepted risk, expires: 2999-01-01}\n"
        "  - {rule: b, path: 'y.*', reason: was fine once, expires: 2001-01-01}\n",
    )
    with pytest.raises(StepFailed, match=r"1 finding \(1 high\)"):
        sast(ctx, REPORT_FROM)
    result = ctx.findings.recorded[0][0]
    assert {f.rule_id: f.suppressed for f in result.findings} == {"a": "accepted risk", "b": None}
    assert result.summary.suppressed == 1
    assert (
        "suppression of rule b under y.* expired on 2001-01-01: its 1 finding(s) count again "
        "(was fine once)"
    ) in ctx.log.lines


def test_a_named_suppressions_file_must_exist(tmp_path: Path) -> None:
    """Given suppressions: a missing file, Then the step fails naming it."""
    ctx = FakeContext(tmp_path)
    write(ctx, "report.sarif", sarif_log())
    with pytest.raises(
        StepFailed, match=r"suppressions file sec/waivers\.yaml is not in the workspace"
    ):
        sast(ctx, REPORT_FROM, suppressions="sec/waivers.yaml")


def test_ignore_unfixed_drops_findings_without_a_fix(tmp_path: Path) -> None:
    """Given grype output with a fixed and an unfixed match, When ignore_unfixed, Then one stays."""
    ctx = FakeContext(tmp_path)
    fixture = Path(__file__).parents[1] / "data" / "scanners" / "grype-image.json"
    write(ctx, "grype.json", fixture.read_text())
    config = ScanContainerConfig.model_validate(
        {
            "target_image": "app:1",
            "scanner": "grype",
            "runner": "local",
            "severity_threshold": "LOW",
            "ignore_unfixed": True,
        }
    )
    # Stand in for grype: the command line is checked elsewhere, the parsing here.
    ctx.provider = lambda name: FakeGrype()  # type: ignore[method-assign]
    with pytest.raises(StepFailed, match=r"1 finding \(1 low\)"):
        ScanContainer().run(ctx, config)
    assert [f.rule_id for f in ctx.findings.recorded[0][0].findings] == ["CVE-1999-0001"]


class FakeGrype:
    """The grype provider, with a command that copies a real grype report."""

    def __new__(cls) -> Any:
        from conveyor.orchestrator.scanning.scanner import ScanCommand
        from conveyor.providers.scanners.grype import Grype

        grype = Grype()
        grype.command = lambda target: ScanCommand(  # type: ignore[method-assign]
            ("cp", "grype.json", target.report_path)
        )
        return grype


def sarif_parse(text: str) -> list[Finding]:
    """The findings the generic scanner reads from ``text``."""
    from conveyor.providers.scanners.sarif import Sarif

    return Sarif().parse(text).findings


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scanner": "semgrep", "fail_on_severity": "unknown"}, "is not a severity"),
        ({"scanner": "semgrep", "source_path": "/workspace/../etc"}, "outside the workspace"),
        ({"scanner": "sarif"}, "command is required with scanner: sarif"),
        ({"scanner": "bandit", "command": "x"}, "only with it"),
        ({"scanner": "trivy"}, "Input should be 'semgrep', 'bandit' or 'sarif'"),
    ],
)
def test_configs_are_checked_before_anything_runs(config: dict[str, Any], message: str) -> None:
    """Given a wrong scan config, When validated, Then the error says what is wrong."""
    with pytest.raises(ValueError, match=message):
        ScanSastConfig.model_validate(config)
    assert ScanDepsConfig().scanner == "grype"
