"""Semgrep and Bandit for real (runner: local, offline, local rules) on vulnerable code.

The code is tests/data/vulnerable/src/app.py: shell=True, yaml.load with the full
Loader, a hard-coded password and eval. The tests assert the exact findings.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.errors import StepFailed
from conveyor.providers.scanners.base import local_binary
from conveyor.steps.scan.sast import ScanSast, ScanSastConfig
from tests.conftest import missing
from tests.unit.fakes import FakeContext

TARGET = Path(__file__).parents[1] / "data" / "vulnerable"


def tool(name: str) -> None:
    """Skip (fail under CI) unless the scanner is installed (pip install -e '.[dev]')."""
    try:
        local_binary(name)
    except StepFailed:
        missing(name, f"{name} is in the dev extras: pip install -e '.[dev]'")


def context(tmp_path: Path, **kwargs: Any) -> FakeContext:
    """A context whose workspace holds the vulnerable code and its rules."""
    ctx = FakeContext(tmp_path, step_key="sast", **kwargs)
    shutil.copytree(TARGET, ctx.workspace)
    return ctx


def scan(ctx: FakeContext, **config: Any) -> dict[str, Any]:
    """Run step.scan_sast locally."""
    return dict(ScanSast().run(ctx, ScanSastConfig.model_validate({"runner": "local", **config})))


def test_semgrep_with_local_rules_finds_each_vulnerability(tmp_path: Path) -> None:
    """Given local rules, When semgrep scans offline, Then the four findings, by severity."""
    tool("semgrep")
    ctx = context(tmp_path)
    with pytest.raises(StepFailed) as failed:
        scan(
            ctx,
            scanner="semgrep",
            source_path="/workspace/src",
            rules=["rules/python-security.yaml"],
            fail_on_severity="error",
        )
    assert "semgrep: 2 findings (2 high) at or above high" in failed.value.message
    result = ctx.findings.recorded[0][0]
    found = {(f.rule_id, f.severity.value, f.location, f.line) for f in result.findings}
    assert found == {
        ("rules.hardcoded-password", "info", "src/app.py", 7),
        ("rules.subprocess-shell-true", "high", "src/app.py", 12),
        ("rules.yaml-unsafe-load", "high", "src/app.py", 17),
        ("rules.eval-call", "medium", "src/app.py", 22),
    }
    # Semgrep hides the code from logged-out users; the step read it from the workspace.
    shell = next(f for f in result.findings if f.line == 12)
    assert shell.snippet == "    return subprocess.call(command, shell=True)"
    assert result.scanner_version


def test_semgrep_fingerprints_do_not_change_when_code_moves(tmp_path: Path) -> None:
    """Given a second scan after lines were added above, Then the fingerprints are the same."""
    tool("semgrep")
    ctx = context(tmp_path)
    rules = {"scanner": "semgrep", "source_path": "src", "rules": ["rules"], "fail_on": "never"}
    scan(ctx, **rules)
    app = ctx.workspace / "src" / "app.py"
    app.write_text("# moved\n# down\n# three lines\n" + app.read_text())
    ctx.attempt = 2
    scan(ctx, **rules)
    first, second = (r for r, _ in ctx.findings.recorded)
    assert [f.line for f in second.findings] == [f.line + 3 for f in first.findings]
    assert [f.fingerprint for f in second.findings] == [f.fingerprint for f in first.findings]


def test_semgrep_registry_rules_without_the_registry_fail_clearly(tmp_path: Path) -> None:
    """Given p/owasp-top-ten and no reachable registry, Then the step fails saying so."""
    tool("semgrep")
    ctx = context(tmp_path)
    with pytest.raises(StepFailed, match="p/owasp-top-ten come from the Semgrep registry"):
        scan(
            ctx,
            scanner="semgrep",
            rules=["p/owasp-top-ten"],
            env={"SEMGREP_URL": "http://127.0.0.1:9"},
        )


def test_semgrep_with_a_broken_rule_file_fails_the_step(tmp_path: Path) -> None:
    """Given a rule file that is not valid, When semgrep runs, Then the step fails saying so."""
    tool("semgrep")
    ctx = context(tmp_path)
    (ctx.workspace / "bad.yaml").write_text("rules:\n  - id: x\n    pattern: (\n")
    with pytest.raises(StepFailed, match=r"semgrep failed \(exit code [2-9]\)"):
        scan(ctx, scanner="semgrep", rules=["bad.yaml"])


def test_bandit_finds_each_vulnerability_with_its_severity(tmp_path: Path) -> None:
    """Given the vulnerable code, When bandit scans it, Then its five findings, exactly."""
    tool("bandit")
    ctx = context(tmp_path)
    with pytest.raises(StepFailed) as failed:
        scan(ctx, scanner="bandit", source_path="src", fail_on_severity="medium")
    assert "bandit: 3 findings (1 high, 2 medium) at or above medium" in failed.value.message
    result = ctx.findings.recorded[0][0]
    found = {(f.rule_id, f.severity.value, f.location, f.line) for f in result.findings}
    assert found == {
        ("B404", "low", "src/app.py", 3),
        ("B105", "low", "src/app.py", 7),
        ("B602", "high", "src/app.py", 12),
        ("B506", "medium", "src/app.py", 17),
        ("B307", "medium", "src/app.py", 22),
    }
    keys = {a.key for a in ctx.artifacts.list(ctx.run_id)}
    assert keys == {"scans/sast.sarif", "scans/sast.json"}


def test_bandit_passes_a_gate_above_what_it_found_and_outputs_counts(tmp_path: Path) -> None:
    """Given fail_on_severity critical, When bandit finds at most high, Then outputs the summary."""
    tool("bandit")
    ctx = context(tmp_path)
    outputs = scan(ctx, scanner="bandit", source_path="/workspace/src", fail_on_severity="critical")
    assert outputs["passed_gate"] is True
    assert outputs["summary"] | {} == {
        "critical": 0,
        "high": 1,
        "medium": 2,
        "low": 2,
        "info": 0,
        "unknown": 0,
        "total": 5,
        "suppressed": 0,
        "new": 0,
    }
    assert outputs["command"].split()[1:4] == ["-r", "src", "-f"]


PIPELINE = """\
pipelines:
  sec:
    steps:
      - name: checkout
        type: step.shell_exec
        config:
          commands:
            - mkdir -p src && printf 'import subprocess\\n\\nsubprocess.call(cmd, shell=True)\\n' > src/app.py
            - if [ -n "{{ default "" .extra }}" ]; then printf '\\n\\nx = eval(y)\\n' | cat - src/app.py > t && mv t src/app.py; fi
      - name: sast
        type: step.scan_sast
        config: {scanner: bandit, runner: local, source_path: src, fail_on: new, fail_on_severity: low}
      - name: report
        type: step.log
        config: {message: "high={{ .steps.sast.summary.high }} new={{ .steps.sast.new }}"}
"""


def test_fail_on_new_across_runs_of_a_pipeline_on_a_branch(settings: Any) -> None:
    """Given runs on main, When a later run adds a vulnerability, Then only it fails, as new."""
    tool("bandit")
    from conveyor.orchestrator.store.findings import FindingQuery, list_findings
    from tests.unit.engine_kit import finish, log_text, open_engine, start, step

    with open_engine(settings) as engine:
        first = finish(engine, start(engine, PIPELINE, {"branch": "main"}), timeout=60)
        second = finish(
            engine, start(engine, PIPELINE, {"branch": "main", "extra": "1"}), timeout=60
        )
        topic = finish(
            engine, start(engine, PIPELINE, {"branch": "topic", "extra": "1"}), timeout=60
        )

        assert first.status.value == "succeeded", log_text(engine, first.id)
        assert "high=1 new=0" in log_text(engine, first.id, "report")
        assert second.status.value == "failed"
        failed = step(engine, second.id, "sast")
        assert "bandit: 1 new finding (1 medium) at or above low" in failed.last_error
        rows = list_findings(engine.store, second.id, FindingQuery())
        # The shell=True call moved down three lines and is still the same, old finding.
        assert {(r["rule_id"], r["line"], r["is_new"]) for r in rows} == {
            ("B404", 4, False),
            ("B602", 6, False),
            ("B307", 3, True),
        }
        assert topic.status.value == "succeeded"  # a new branch with no baseline sets one
