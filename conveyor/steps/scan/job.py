"""What every scan step does once the report is read: waive, compare, gate, keep, say.

Order matters: suppressions first (a waived finding is never new or failing), then the
baseline (``fail_on: new``), then the gate; findings and reports are recorded before
the gate can fail the step, so a failed gate still leaves everything to look at.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conveyor.orchestrator.contracts import StepContext
from conveyor.orchestrator.errors import ConveyorError, StepFailed, SuppressionError
from conveyor.orchestrator.scanning import sarif, suppressions
from conveyor.orchestrator.scanning.gate import FailOn, GatePolicy, evaluate
from conveyor.orchestrator.scanning.history import Baseline
from conveyor.orchestrator.scanning.results import Finding, ScanResult, report_key, summarise
from conveyor.orchestrator.scanning.scanner import Runner, ScanKind, ScanTarget
from conveyor.orchestrator.scanning.severity import Severity

from .config import ScanConfig, workspace_relative
from .session import ScanRun, find_scanner, outputs_of, report_path

#: Findings listed in the step's log; the rest are in the reports and the API.
LOGGED_FINDINGS = 200


@dataclass(frozen=True)
class ScanJob:
    """What a scan step asks for: the kind, the tool, the target and the threshold."""

    kind: ScanKind
    scanner: str
    threshold: Severity
    source_path: str = "."
    rules: tuple[str, ...] = ()
    target_image: str | None = None
    ignore_unfixed: bool = False


def scan(ctx: StepContext, config: ScanConfig, job: ScanJob) -> dict[str, Any]:
    """Run the scan and everything after it; the step's outputs, or StepFailed."""
    scanner = find_scanner(ctx, job.scanner)
    target = ScanTarget(
        kind=job.kind,
        runner=Runner(config.runner),
        source_path=workspace_relative(job.source_path),
        report_path=report_path(ctx.step_key, ctx.attempt),
        rules=job.rules,
        target_image=job.target_image,
        ignore_unfixed=job.ignore_unfixed,
        network_mode=config.network_mode,
    )
    run = ScanRun(ctx, scanner, config, target)
    waivers = workspace_relative(config.suppressions or suppressions.DEFAULT_FILE)
    result = run.execute(waivers, required=config.suppressions is not None)
    if job.ignore_unfixed:
        result = _only_fixed(result)
    result = _waive(ctx, waivers, run.suppressions, result)
    branch = _branch(ctx)
    baseline = _baseline(ctx, config, branch)
    result = _compare(ctx, config, result, baseline)
    policy = GatePolicy(job.threshold, config.fail_on, config.unknown_severity)
    verdict = evaluate(result.findings, policy)
    result = result.model_copy(update={"passed_gate": verdict.passed})
    _log(ctx, result)
    keys = _store(ctx, result)
    ctx.findings.record(result, branch)
    gate = f"fail_on_severity {policy.threshold.value}, fail_on {policy.fail_on.value}"
    if not verdict.passed:
        raise StepFailed(f"{result.scanner}: {verdict.reason} (gate: {gate})")
    ctx.log.line(f"gate passed: {verdict.reason} ({gate})")
    outputs: dict[str, Any] = {
        "scan_result": outputs_of(result),
        "summary": result.summary.model_dump(),
        "passed_gate": True,
        "new": result.summary.new,
        "command": run.display,
        "image": run.image or "",
        "baseline_run": baseline.run_id if baseline else None,
        **keys,
    }
    if keys:
        outputs["report"] = keys.get(config.output_format)
    return outputs


def _only_fixed(result: ScanResult) -> ScanResult:
    kept = [f for f in result.findings if f.fixed_version != ""]
    return result.model_copy(update={"findings": kept, "summary": summarise(kept)})


def _branch(ctx: StepContext) -> str | None:
    value = ctx.params.get("branch")
    return str(value) if value not in (None, "") else None


def _waive(ctx: StepContext, path: str, text: str | None, result: ScanResult) -> ScanResult:
    if text is None:
        return result
    try:
        waivers = suppressions.parse(text, path)
    except SuppressionError as exc:
        raise StepFailed(str(exc)) from exc
    applied = suppressions.apply(result.findings, waivers, datetime.now(UTC).date())
    for waiver, count in applied.expired:
        ctx.log.line(
            f"suppression of {waiver.describe()} expired on {waiver.expires.isoformat()}: "
            f"its {count} finding(s) count again ({waiver.reason})"
        )
    return result.model_copy(
        update={"findings": applied.findings, "summary": summarise(applied.findings)}
    )


def _baseline(ctx: StepContext, config: ScanConfig, branch: str | None) -> Baseline | None:
    found = ctx.findings.baseline(branch)
    if found is None and config.baseline_branch:
        found = ctx.findings.baseline(config.baseline_branch)
    return found


def _compare(
    ctx: StepContext, config: ScanConfig, result: ScanResult, baseline: Baseline | None
) -> ScanResult:
    if baseline is None:
        if config.fail_on is FailOn.NEW:
            ctx.log.line(
                f"no earlier successful run of {ctx.pipeline} on branch "
                f"{_branch(ctx) or '(none)'} recorded a scan: this run sets the baseline, "
                "and no finding counts as new"
            )
        return result
    findings = [
        f.model_copy(update={"new": f.fingerprint not in baseline.fingerprints})
        for f in result.findings
    ]
    ctx.log.line(f"compared with run {baseline.run_id}: {_count_new(findings)} new finding(s)")
    return result.model_copy(update={"findings": findings, "summary": summarise(findings)})


def _count_new(findings: list[Finding]) -> int:
    return sum(1 for f in findings if f.new and not f.suppressed)


def _log(ctx: StepContext, result: ScanResult) -> None:
    for error in result.errors:
        ctx.log.line(f"{result.scanner} reported: {error}", "stderr")
    for skipped in result.skipped:
        ctx.log.line(f"not audited: {skipped}", "stderr")
    ordered = sorted(result.findings, key=lambda f: -f.severity.rank)
    for finding in ordered[:LOGGED_FINDINGS]:
        ctx.log.line(_finding_line(finding))
    if len(ordered) > LOGGED_FINDINGS:
        ctx.log.line(f"… and {len(ordered) - LOGGED_FINDINGS} more (see the reports)")
    counts = result.summary
    ctx.log.line(
        f"{result.scanner}: {counts.total} finding(s): {counts.critical} critical, "
        f"{counts.high} high, {counts.medium} medium, {counts.low} low, {counts.info} info, "
        f"{counts.unknown} unknown; {counts.suppressed} suppressed"
    )


def _finding_line(finding: Finding) -> str:
    where = finding.location + (f":{finding.line}" if finding.line else "")
    tags = " [new]" if finding.new else ""
    tags += f" [suppressed: {finding.suppressed}]" if finding.suppressed else ""
    first = finding.message.strip().splitlines()[0] if finding.message.strip() else ""
    return f"{finding.severity.value.upper():8} {finding.rule_id} {where} {first[:200]}{tags}"


def _store(ctx: StepContext, result: ScanResult) -> dict[str, str]:
    """Store the SARIF and JSON reports as artifacts; their keys (none without a store)."""
    documents = {
        "sarif": (report_key(ctx.step_key, "sarif"), sarif.render(result)),
        "json": (report_key(ctx.step_key, "json"), result.model_dump(mode="json")),
    }
    keys: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-report-") as tmp:
            for name, (key, document) in documents.items():
                path = Path(tmp) / name
                path.write_text(json.dumps(document, indent=2), "utf-8")
                keys[name] = ctx.artifacts.put(ctx.run_id, key, path).key
    except ConveyorError as exc:  # no store here: the findings are still recorded
        ctx.log.line(f"reports not stored as artifacts: {exc.message}", "stderr")
    return keys
