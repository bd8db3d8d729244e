"""Every route of the API, in one table: path, role, models, statuses and handler."""

from __future__ import annotations

from functools import cache

from flask import Response

from conveyor.orchestrator.store import Role

from . import artifacts, docs, findings, logs, pipelines, runs, system, tokens
from .finding_models import FindingList, FindingQuery
from .models import (
    ArtifactList,
    CreateToken,
    EventList,
    EventQuery,
    Health,
    LogList,
    LogQuery,
    NewToken,
    PipelineList,
    PipelineVersion,
    Readiness,
    RegisterPipeline,
    RunDetail,
    RunPage,
    RunQuery,
    StepTypeList,
    SubmitRun,
    TokenList,
)
from .openapi import document
from .routing import Call, Route

READ, RUN, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
SSE = {"text/event-stream": {"type": "string", "description": "`log` events, then `end`."}}
EVENT_SSE = {"text/event-stream": {"type": "string", "description": "`event` events, then `end`."}}
JSON_DOCUMENT = {"application/json": {"type": "object"}}
BINARY = {"application/octet-stream": {"type": "string", "format": "binary"}}
SARIF = {"application/sarif+json": {"type": "object", "description": "A SARIF 2.1.0 log."}}
PROMETHEUS = {"text/plain": {"type": "string", "description": "Prometheus text format."}}
HTML = {"text/html": {"type": "string", "description": "Swagger UI over this document."}}
ASSET = {
    "text/css": {"type": "string"},
    "text/javascript": {"type": "string"},
    "image/png": {"type": "string", "format": "binary"},
}
SOURCE = {
    runs.SOURCE_PART: "The run's source: a gzipped tar (`conveyor submit --source DIR` packs "
    "one), unpacked into the run's workspace on each worker host before the run's first step "
    "there; at most CONVEYOR_MAX_SOURCE_BYTES (413 past it)."
}
IDEMPOTENCY = {
    runs.IDEMPOTENCY_HEADER: "A key of your choosing: a request repeating it gets the run the "
    "first one made (200, `Idempotent-Replayed: true`) instead of a new run (201)."
}


def openapi_json(call: Call[None, None]) -> Response:
    """This document."""
    return Response(_openapi_text(), mimetype="application/json")


@cache
def _openapi_text() -> str:
    import json  # noqa: PLC0415  (only this route needs it)

    return json.dumps(document(ROUTES), indent=2)


# A table reads best as a table: one route per entry, the same order of fields in each.
# fmt: off
ROUTES: tuple[Route, ...] = (
    # -- pipelines ---------------------------------------------------------------------
    Route("POST", "/pipelines", pipelines.register_pipeline,
          "Register a pipeline", "pipelines", role=RUN, body=RegisterPipeline,
          response=PipelineVersion, status=201, also=(200,), errors=(400, 422)),
    Route("GET", "/pipelines", pipelines.list_pipelines,
          "List registered pipelines", "pipelines", role=READ, response=PipelineList),
    Route("GET", "/pipelines/{name}", pipelines.get_pipeline,
          "List a pipeline's versions", "pipelines", role=READ,
          response=PipelineList, errors=(404,)),
    Route("GET", "/pipelines/{name}/versions/{version}", pipelines.get_pipeline_version,
          "Read one version of a pipeline", "pipelines", role=READ,
          response=PipelineVersion, errors=(404,)),
    # -- runs --------------------------------------------------------------------------
    Route("POST", "/runs", runs.submit_run,
          "Start a run", "runs", role=RUN, body=SubmitRun, headers=IDEMPOTENCY, uploads=SOURCE,
          response=RunDetail, status=201, also=(200,), errors=(400, 404, 409, 422)),
    Route("GET", "/runs", runs.list_runs,
          "List runs, newest first", "runs", role=READ, query=RunQuery,
          response=RunPage, errors=(400,)),
    Route("GET", "/runs/{run_id}", runs.get_run,
          "Read a run and its steps", "runs", role=READ,
          response=RunDetail, errors=(404, 409)),
    Route("GET", "/runs/{run_id}/events", runs.list_events,
          "Read or follow a run's events", "runs", role=READ, query=EventQuery,
          response=EventList, media=EVENT_SSE, errors=(400, 404, 409)),
    Route("GET", "/runs/{run_id}/steps/{step}/logs", logs.step_logs,
          "Read or follow a step's log", "runs", role=READ, query=LogQuery, slashed=("step",),
          response=LogList, media=SSE, errors=(400, 404, 409)),
    Route("POST", "/runs/{run_id}/cancel", runs.cancel_run,
          "Cancel a run", "runs", role=RUN,
          response=RunDetail, errors=(404, 409)),
    Route("POST", "/runs/{run_id}/retry", runs.retry_failed_run,
          "Retry a failed or cancelled run", "runs", role=RUN,
          response=RunDetail, errors=(404, 409)),
    Route("GET", "/runs/{run_id}/artifacts", artifacts.list_artifacts,
          "List a run's artifacts", "runs", role=READ,
          response=ArtifactList, errors=(404, 409)),
    Route("GET", "/runs/{run_id}/artifacts/{key}", artifacts.get_artifact,
          "Download an artifact (streamed)", "runs", role=READ, slashed=("key",),
          media=BINARY, errors=(404, 409, 422)),
    Route("DELETE", "/runs/{run_id}/artifacts/{key}", artifacts.delete_artifact,
          "Delete an artifact", "runs", role=ADMIN, slashed=("key",),
          status=204, errors=(404, 409, 422)),
    Route("GET", "/runs/{run_id}/findings", findings.list_findings,
          "List a run's security findings", "runs", role=READ, query=FindingQuery,
          response=FindingList, errors=(400, 404, 409)),
    Route("GET", "/runs/{run_id}/steps/{step}/sarif", findings.get_sarif,
          "Download a scan step's SARIF report", "runs", role=READ, slashed=("step",),
          media=SARIF, errors=(404, 409)),
    # -- tokens ------------------------------------------------------------------------
    Route("POST", "/tokens", tokens.create_token,
          "Create an API token", "tokens", role=ADMIN, body=CreateToken,
          response=NewToken, status=201, errors=(400,)),
    Route("GET", "/tokens", tokens.list_tokens,
          "List API tokens", "tokens", role=ADMIN, response=TokenList),
    Route("DELETE", "/tokens/{token_id}", tokens.revoke_token,
          "Revoke an API token", "tokens", role=ADMIN, status=204, errors=(404,)),
    # -- system ------------------------------------------------------------------------
    Route("GET", "/step-types", system.step_types,
          "List installed step types", "system", role=READ, response=StepTypeList),
    Route("GET", "/module-schemas", system.step_types,
          "List installed step types (the seed's name)", "system", role=READ,
          response=StepTypeList, operation_id="module_schemas"),
    Route("GET", "/healthz", system.healthz,
          "Liveness", "system", role=None, response=Health),
    Route("GET", "/readyz", system.readyz,
          "Readiness: database and broker", "system", role=None,
          response=Readiness, also=(503,)),
    Route("GET", "/metrics", system.metrics,
          "Prometheus metrics", "system", role=READ, media=PROMETHEUS),
    Route("GET", "/openapi.json", openapi_json,
          "This OpenAPI document", "system", role=None, media=JSON_DOCUMENT),
    Route("GET", "/docs", docs.docs_page,
          "Interactive API docs", "system", role=None, media=HTML),
    Route("GET", "/docs/{asset}", docs.docs_asset,
          "A file of the interactive docs", "system", role=None, media=ASSET, errors=(404,)),
)
# fmt: on
