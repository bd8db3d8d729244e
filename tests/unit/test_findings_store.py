"""Findings in the execution store: recording, replacing, and finding the baseline run.

Each test takes ``db_store`` (tests/conftest.py): it runs on SQLite and on the real Postgres.
"""

from __future__ import annotations

import sqlalchemy as sa

from conveyor.orchestrator.scanning.results import Finding, build_result
from conveyor.orchestrator.scanning.severity import Severity
from conveyor.orchestrator.store.findings import (
    FindingQuery,
    StoreLedger,
    list_findings,
    list_reports,
)
from conveyor.orchestrator.store.records import NewRun, StepSeed
from conveyor.orchestrator.store.schema import runs
from conveyor.orchestrator.store.sql import SqlStore

SOURCE = "pipelines: {p: {steps: [{name: a, type: step.log, config: {message: hi}}]}}"


def new_run(store: SqlStore, pipeline: str = "p", status: str = "succeeded") -> str:
    """A run of ``pipeline`` in ``status``."""
    run = store.create_run(
        NewRun(
            pipeline=pipeline,
            source=SOURCE.replace("p:", f"{pipeline}:"),
            plan={},
            params={},
            steps=[StepSeed("sast", "step.scan_sast", "scan")],
        )
    )
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run.id).values(status=status))
    return run.id


def result(*rules: str, severity: Severity = Severity.HIGH) -> object:
    """A scan result with one finding per rule."""
    return build_result(
        "bandit",
        [
            Finding(
                scanner="bandit",
                rule_id=r,
                severity=severity,
                location="a.py",
                line=1,
                snippet=f"{r}()",
            )
            for r in rules
        ],
    )


def record(
    store: SqlStore, run_id: str, branch: str | None, *rules: str, step: str = "sast"
) -> None:
    """Record findings of ``rules`` for a step of a run."""
    StoreLedger(store, run_id, step, "p").record(result(*rules), branch)  # type: ignore[arg-type]


def test_the_baseline_is_the_newest_earlier_succeeded_run_on_the_branch(db_store: SqlStore) -> None:
    """Given runs on several branches and statuses, Then the baseline is the right one."""
    old_main = new_run(db_store)
    record(db_store, old_main, "main", "B1")
    main = new_run(db_store)
    record(db_store, main, "main", "B1", "B2")
    failed = new_run(db_store, status="failed")
    record(db_store, failed, "main", "B9")
    topic = new_run(db_store)
    record(db_store, topic, "topic", "B3")
    other = new_run(db_store, pipeline="q")
    record(db_store, other, "main", "B4")
    current = new_run(db_store, status="running")
    later = new_run(db_store)
    record(db_store, later, "main", "B5")  # newer than the current run: never its baseline

    ledger = StoreLedger(db_store, current, "sast", "p")
    baseline = ledger.baseline("main")
    assert baseline is not None and baseline.run_id == main
    assert baseline.fingerprints == {f.fingerprint for f in result("B1", "B2").findings}  # type: ignore[attr-defined]
    assert ledger.baseline("topic").run_id == topic  # type: ignore[union-attr]
    assert ledger.baseline("nope") is None
    assert ledger.baseline(None) is None


def test_runs_without_a_branch_share_one_baseline(db_store: SqlStore) -> None:
    """Given an earlier run with no branch, Then a run with no branch compares with it."""
    earlier = new_run(db_store)
    record(db_store, earlier, None)  # a clean scan: a baseline with no findings
    current = new_run(db_store, status="running")
    baseline = StoreLedger(db_store, current, "sast", "p").baseline(None)
    assert baseline is not None and baseline.run_id == earlier and baseline.fingerprints == set()


def test_recording_again_replaces_the_step_findings(db_store: SqlStore) -> None:
    """Given a retry of a scan step, When it records, Then its findings replace the first ones."""
    run_id = new_run(db_store, status="running")
    record(db_store, run_id, "main", "B1", "B2")
    record(db_store, run_id, "main", "B3")
    record(db_store, run_id, "main", "B7", step="deps")
    rows = list_findings(db_store, run_id, FindingQuery())
    assert sorted(r["rule_id"] for r in rows) == ["B3", "B7"]
    reports = list_reports(db_store, run_id)
    assert [(r["step_key"], r["branch"], r["summary"]["high"]) for r in reports] == [
        ("deps", "main", 1),
        ("sast", "main", 1),
    ]


def test_findings_filter_by_severity_scanner_step_and_newness(db_store: SqlStore) -> None:
    """Given recorded findings, When filtered, Then only the matching ones, worst first."""
    run_id = new_run(db_store, status="running")
    findings = [
        Finding(scanner="semgrep", rule_id="low", severity=Severity.LOW, location="a.py", new=True),
        Finding(
            scanner="semgrep",
            rule_id="crit",
            severity=Severity.CRITICAL,
            location="a.py",
            new=False,
        ),
        Finding(
            scanner="semgrep", rule_id="unk", severity=Severity.UNKNOWN, location="a.py", new=True
        ),
    ]
    StoreLedger(db_store, run_id, "sast", "p").record(build_result("semgrep", findings), None)
    every = list_findings(db_store, run_id, FindingQuery())
    assert [r["rule_id"] for r in every] == ["crit", "unk", "low"]
    assert [r["rule_id"] for r in list_findings(db_store, run_id, FindingQuery(new_only=True))] == [
        "unk",
        "low",
    ]
    high = FindingQuery(severity=("critical", "low"), scanner="semgrep", step="sast")
    assert [r["rule_id"] for r in list_findings(db_store, run_id, high)] == ["crit", "low"]
    assert list_findings(db_store, run_id, FindingQuery(scanner="bandit")) == []
    with db_store.read_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM findings")).scalar() == 3
