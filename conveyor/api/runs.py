"""Runs: submit (idempotently), list a page at a time, read, cancel, retry, read events."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from pathlib import Path

from flask import Response
from werkzeug.datastructures import Headers

from conveyor.orchestrator.engine import (
    drop_source,
    is_gzip,
    new_run_id,
    retry_run,
    store_source,
)
from conveyor.orchestrator.errors import BadRequest, Conflict
from conveyor.orchestrator.pipeline import ExecutionPlan
from conveyor.orchestrator.store import RunRecord
from conveyor.orchestrator.values import check, check_text

from .events import EventFollow
from .models import (
    MAX_INT,
    Event,
    EventList,
    EventQuery,
    Run,
    RunDetail,
    RunPage,
    RunQuery,
    SubmitRun,
)
from .pipelines import find_definition
from .routing import Call, Reply
from .services import Services
from .streams import resume_point, stream

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200  # the column's width
#: The multipart part holding a run's source archive (a gzipped tar).
SOURCE_PART = "source"
MAX_RUN_ID = 36  # the id column's width


def submit_run(call: Call[SubmitRun, None]) -> Reply:
    """Start a run; a request repeating an earlier one's Idempotency-Key gets that run."""
    services, key = call.services, idempotency_key(call.headers)
    limit = services.settings.max_params_bytes
    check(call.body.params, "params", max_bytes=limit)
    check(call.body.secrets, "secrets", max_bytes=limit)
    if key and (earlier := services.store.run_by_idempotency_key(key)):
        return _replayed(services, earlier)
    plan, source, definition_id = plan_of(services, call.body)
    archive = call.uploads.get(SOURCE_PART)
    run_id = None
    if archive is not None:
        # The source goes into the store first, under the id the run will have, and the
        # run's plan records its SHA-256: a run is never started without it.
        run_id, checksum = stored_source(services, archive)
        plan = plan.model_copy(update={"workspace_source": checksum})
    try:
        run = services.runtime.submit(
            plan,
            source,
            call.body.params,
            secrets=call.body.secrets,
            submitted_by=call.who,
            idempotency_key=key,
            definition_id=definition_id,
            run_id=run_id,
        )
    except Conflict:
        _drop(services, run_id)
        # The same key sent twice at once: the other request's run is this one's too.
        if key and (earlier := services.store.run_by_idempotency_key(key)):
            return _replayed(services, earlier)
        raise
    except BaseException:
        _drop(services, run_id)
        raise
    if run_id is not None and run.id != run_id:  # an earlier run with this key: that one
        _drop(services, run_id)
        return _replayed(services, run)
    headers = {"Location": f"/api/v1/runs/{run.id}"}
    return Reply(detail(services, run.id), 201, headers)


def stored_source(services: Services, archive: Path) -> tuple[str, str]:
    """Store an uploaded source archive under a new run id: (the id, its SHA-256)."""
    with archive.open("rb") as head:
        if not is_gzip(head.read(2)):
            raise BadRequest(f"the {SOURCE_PART} part must be a gzipped tar archive (.tar.gz)")
    run_id = new_run_id()
    return run_id, store_source(services.artifacts(), run_id, archive)


def _drop(services: Services, run_id: str | None) -> None:
    """Remove the source stored for a run that was not created after all."""
    if run_id is not None:
        drop_source(services.artifacts(), run_id)


def _replayed(services: Services, run: RunRecord) -> Reply:
    headers = {"Location": f"/api/v1/runs/{run.id}", "Idempotent-Replayed": "true"}
    return Reply(detail(services, run.id), 200, headers)


def idempotency_key(headers: Headers) -> str | None:
    """The request's Idempotency-Key, checked (None when there is none)."""
    key = headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
    return key


def plan_of(services: Services, body: SubmitRun) -> tuple[ExecutionPlan, str, str | None]:
    """(plan, source, registered definition id) of what the request asks to run."""
    if body.definition is not None:
        compiled = services.compiler.compile(body.definition)
        return compiled.select(body.pipeline), compiled.source, None
    assert body.pipeline is not None  # the model requires one or the other
    definition = find_definition(services.definitions, body.pipeline, body.version)
    compiled = services.compiler.compile(definition.source)
    return compiled.select(definition.name), definition.source, definition.id


def detail(services: Services, run_id: str) -> RunDetail:
    """A run as it is now, with its steps."""
    store = services.store
    return RunDetail.with_steps(store.get_run(run_id), store.list_steps(run_id))


def list_runs(call: Call[None, RunQuery]) -> RunPage:
    """Runs, newest first, a page at a time; a cursor page is stable while runs arrive."""
    query = call.query
    after = decode_cursor(query.cursor) if query.cursor else None
    status = query.status.value if query.status else None
    found = call.services.store.list_runs(
        limit=query.limit + 1, status=status, pipeline=query.pipeline, after=after
    )
    page = found[: query.limit]
    more = len(found) > query.limit
    return RunPage(
        items=[Run.of(r) for r in page], next_cursor=encode_cursor(page[-1]) if more else None
    )


def encode_cursor(run: RunRecord) -> str:
    """An opaque cursor naming the last run of a page."""
    raw = json.dumps([run.created_at.isoformat(), run.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) from a cursor; 400 for one this API did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise BadRequest(f"invalid cursor {cursor!r}") from None
    # A run id is 36 characters; a forged cursor must not carry what the store cannot bind.
    if moment.tzinfo is None or not isinstance(run_id, str) or len(run_id) > MAX_RUN_ID:
        raise BadRequest(f"invalid cursor {cursor!r}")
    check_text(run_id, "cursor")
    return moment, run_id


def get_run(call: Call[None, None], run_id: str) -> RunDetail:
    """A run (by id, or a unique prefix of at least 4 characters) with its steps."""
    return detail(call.services, call.services.store.find_run(run_id).id)


def cancel_run(call: Call[None, None], run_id: str) -> RunDetail:
    """Cancel a run: steps not started are cancelled, running ones are told to stop."""
    services = call.services
    run = services.store.find_run(run_id)
    services.runtime.cancel(run.id, f"cancelled by {call.who}")
    return detail(services, run.id)


def retry_failed_run(call: Call[None, None], run_id: str) -> RunDetail:
    """Run the failed and cancelled steps again (and what needs them); keep the rest."""
    services = call.services
    run = services.store.find_run(run_id)
    retry_run(services.runtime, run.id, by=call.who)
    return detail(services, run.id)


def list_events(call: Call[None, EventQuery], run_id: str) -> EventList | Response:
    """The run's events after ``after``, in order, or a live stream of them."""
    store, query = call.services.store, call.query
    run = store.find_run(run_id)
    if query.follow:
        after = resume_point(call.headers, query.after, MAX_INT)
        return stream(EventFollow(store, run.id, start=after), call.services.poll_seconds)
    events = store.list_events(run.id, after=call.query.after)
    last = events[-1].seq if events else call.query.after
    return EventList(items=[Event.of(e) for e in events], last_seq=last)
