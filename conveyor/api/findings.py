"""Routes of a run's security findings: list them (filtered) and download a step's SARIF."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from flask import Response

from conveyor.orchestrator.artifacts import chunks
from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.scanning.results import report_key
from conveyor.orchestrator.store import findings as ledger

from .finding_models import FindingList, FindingModel, FindingQuery, ScanReportModel
from .routing import Call

SARIF_MEDIA = "application/sarif+json"


def list_findings(call: Call[None, FindingQuery], run_id: str) -> FindingList:
    """The run's findings, worst first: by severity, scanner, step, or new only."""
    store = call.services.store
    run = store.find_run(run_id)
    query = call.query
    filters = ledger.FindingQuery(
        severity=tuple(query.severity.split(",")) if query.severity else (),
        scanner=query.scanner,
        step=query.step,
        new_only=query.new,
    )
    rows = ledger.list_findings(store, run.id, filters)
    reports = ledger.list_reports(store, run.id)
    return FindingList(
        items=[FindingModel.of(r) for r in rows],
        reports=[ScanReportModel.model_validate(r) for r in reports],
    )


def get_sarif(call: Call[None, None], run_id: str, step: str) -> Response:
    """The SARIF 2.1.0 report a scan step stored (streamed from the artifact store)."""
    store = call.services.store
    run = store.find_run(run_id)
    store.get_step(run.id, step)  # 404 naming the step when the run has none such
    if not any(r["step_key"] == step for r in ledger.list_reports(store, run.id)):
        raise NotFound(f"step {step!r} of run {run.id} recorded no scan")
    artifact, stream = call.services.artifacts().open(run.id, report_key(step, "sarif"))
    headers = {
        "Content-Length": str(artifact.size),
        "Content-Disposition": f'attachment; filename="{artifact.key.rsplit("/", 1)[-1]}"',
        "X-Checksum-Sha256": artifact.checksum,
    }
    return Response(_streamed(stream), mimetype=SARIF_MEDIA, headers=headers)


def _streamed(stream: BinaryIO) -> Iterator[bytes]:
    with stream:  # closed when the download ends, or the client goes away
        yield from chunks(stream)
