"""A run's security findings over the API: filtered lists and a step's SARIF download."""

from __future__ import annotations

import json
from pathlib import Path

from flask.testing import FlaskClient

from conveyor.api.services import Services
from conveyor.orchestrator.scanning import sarif
from conveyor.orchestrator.scanning.results import Finding, build_result
from conveyor.orchestrator.scanning.severity import Severity
from conveyor.orchestrator.store.findings import StoreLedger
from tests.unit.api.kit import RUNS, body, submit

Headers = dict[str, str]
SCAN = """\
pipelines:
  sec:
    steps:
      - {name: sast, type: step.scan_sast, config: {scanner: bandit, runner: local}}
"""


def scanned(services: Services, tmp_path: Path, run_id: str) -> None:
    """Record what a scan step would have: three findings and the SARIF artifact."""
    findings = [
        Finding(
            scanner="bandit",
            rule_id="B602",
            severity=Severity.HIGH,
            location="a.py",
            line=3,
            new=True,
        ),
        Finding(
            scanner="bandit",
            rule_id="B105",
            severity=Severity.LOW,
            location="a.py",
            line=1,
            new=False,
        ),
        Finding(
            scanner="bandit",
            rule_id="B307",
            severity=Severity.MEDIUM,
            location="b.py",
            line=9,
            new=False,
            suppressed="accepted until the rewrite",
        ),
    ]
    result = build_result("bandit", findings)
    StoreLedger(services.store, run_id, "sast", "sec").record(result, "main")
    path = tmp_path / "scan.sarif"
    path.write_text(json.dumps(sarif.render(result)))
    services.artifacts().put(run_id, "scans/sast.sarif", path)


def test_findings_are_listed_worst_first_with_the_scan_summary(
    client: FlaskClient, operator: Headers, viewer: Headers, services: Services, tmp_path: Path
) -> None:
    """Given a scanned run, When its findings are read, Then worst first, with the reports."""
    run = submit(client, operator, SCAN)
    scanned(services, tmp_path, run["id"])

    answer = body(client.get(f"{RUNS}/{run['id']}/findings", headers=viewer))

    assert [(f["rule_id"], f["severity"], f["new"]) for f in answer["items"]] == [
        ("B602", "high", True),
        ("B307", "medium", False),
        ("B105", "low", False),
    ]
    assert answer["items"][1]["suppressed"] == "accepted until the rewrite"
    (report,) = answer["reports"]
    assert (report["step_key"], report["branch"], report["summary"]["high"]) == ("sast", "main", 1)


def test_findings_filter_by_severity_scanner_and_new_only(
    client: FlaskClient, operator: Headers, viewer: Headers, services: Services, tmp_path: Path
) -> None:
    """Given a scanned run, When filtered, Then only the matching findings come back."""
    run = submit(client, operator, SCAN)
    scanned(services, tmp_path, run["id"])
    url = f"{RUNS}/{run['id']}/findings"

    def rules(query: str) -> list[str]:
        return [f["rule_id"] for f in body(client.get(f"{url}?{query}", headers=viewer))["items"]]

    assert rules("severity=high,LOW") == ["B602", "B105"]
    assert rules("new=1") == ["B602"]
    assert rules("scanner=semgrep") == []
    assert rules("scanner=bandit&step=sast&new=false") == ["B602", "B307", "B105"]
    bad = client.get(f"{url}?severity=severe", headers=viewer)
    assert bad.status_code == 400 and "unknown severity severe" in body(bad)["detail"]


def test_a_scan_steps_sarif_is_downloaded(
    client: FlaskClient, operator: Headers, viewer: Headers, services: Services, tmp_path: Path
) -> None:
    """Given a scanned run, When its step's SARIF is downloaded, Then a SARIF 2.1.0 log."""
    run = submit(client, operator, SCAN)
    scanned(services, tmp_path, run["id"])

    answer = client.get(f"{RUNS}/{run['id']}/steps/sast/sarif", headers=viewer)

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/sarif+json"
    log = json.loads(answer.data)
    assert log["version"] == "2.1.0"
    assert len(log["runs"][0]["results"]) == 3


def test_sarif_of_a_step_that_did_not_scan_is_a_404(
    client: FlaskClient, operator: Headers, viewer: Headers
) -> None:
    """Given a run whose step recorded no scan, When its SARIF is asked for, Then a 404."""
    run = submit(client, operator, SCAN)
    none = client.get(f"{RUNS}/{run['id']}/steps/sast/sarif", headers=viewer)
    nostep = client.get(f"{RUNS}/{run['id']}/steps/nope/sarif", headers=viewer)
    assert none.status_code == 404 and "recorded no scan" in body(none)["detail"]
    assert nostep.status_code == 404
    assert client.get(f"{RUNS}/{run['id']}/findings").status_code == 401
