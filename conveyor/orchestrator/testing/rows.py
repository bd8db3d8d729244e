"""What the in-memory store keeps of a run: its records, in the shapes SQL hands back.

Records are frozen; a write replaces one, so a dict of them copied is a snapshot.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from conveyor.orchestrator import values
from conveyor.orchestrator.clock import new_id
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store.logchunks import Chunk
from conveyor.orchestrator.store.records import (
    EventRecord,
    LogRecord,
    NewRun,
    RunRecord,
    StepRecord,
)

#: What ``steps`` and ``queued_now`` leave out, as SQL reads only the state columns.
_NOT_STATE: dict[str, Any] = dict.fromkeys(
    (
        "exit_code",
        "outputs",
        "lease_owner",
        "lease_expires_at",
        "available_at",
        "started_at",
        "completed_at",
    )
)
#: Column names that differ from the record's field names.
_STEP_FIELDS = {"step_key": "key", "instance_id": "run_id"}
#: A log line waiting for its id: (step key, attempt, stream, text, written at).
PendingLine = tuple[str, int, str, str, datetime]


def as_json(value: Any) -> Any:
    """``value`` as it comes back from a JSON column: a fresh copy, or TypeError.

    What SQL's JSON columns refuse (``values.check``), the twin refuses too.
    """
    values.check(value, "value")
    return json.loads(json.dumps(value))


@dataclass
class RunRows:
    """Everything stored of one run. Records are replaced, never changed in place."""

    run: RunRecord
    plan: dict[str, Any]
    steps: dict[str, StepRecord]
    idempotency_key: str | None = None
    sealed: str | None = None
    events: list[EventRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    #: The last chunk of each (step key, attempt)'s log, with its id: where appends go on.
    last_chunks: dict[tuple[str, int], tuple[int, Chunk]] = field(default_factory=dict)
    #: Held by the transaction on this run: the twin of the run row's lock.
    lock: threading.Lock = field(default_factory=threading.Lock)


def state_only(step: StepRecord) -> StepRecord:
    """The step as a read of its state columns sees it."""
    return replace(step, **_NOT_STATE)


def step_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values as record fields, refused where SQL would refuse them."""
    found = {_STEP_FIELDS.get(name, name): value for name, value in fields.items()}
    for name, value in found.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError(f"naive datetime given to the store ({name})")
    if found.get("outputs") is not None:
        found["outputs"] = as_json(found["outputs"])
    if "status" in found:
        found["status"] = StepStatus(found["status"])
    return found


def succeeded_outputs(steps: Collection[StepRecord]) -> dict[str, dict[str, Any]]:
    """Outputs of the succeeded steps among ``steps``, by key, as fresh copies."""
    return {s.key: as_json(s.outputs or {}) for s in steps if s.status == StepStatus.SUCCEEDED}


def new_rows(new: NewRun, definition_id: str, now: datetime) -> RunRows:
    """The rows of a new run: running, every step pending, nothing written yet."""
    run = RunRecord(
        id=new.id or new_id(),
        definition_id=definition_id,
        pipeline=new.pipeline,
        status=RunStatus.RUNNING,
        params=as_json(new.params),
        submitted_by=new.submitted_by,
        error=None,
        event_seq=0,
        deadline=new.deadline,
        created_at=now,
        updated_at=now,
        completed_at=None,
    )
    steps = {
        seed.key: new_step(run.id, position, seed.key, seed.type, seed.queue)
        for position, seed in enumerate(new.steps)
    }
    return RunRows(run, as_json(new.plan), steps, new.idempotency_key, new.sealed_secrets)


def new_step(run_id: str, position: int, key: str, type_: str, queue: str) -> StepRecord:
    """A step of a new run: pending, never attempted."""
    return StepRecord(
        id=new_id(),
        run_id=run_id,
        key=key,
        position=position,
        type=type_,
        status=StepStatus.PENDING,
        attempts=0,
        queue=queue,
        **dict.fromkeys(_NOT_STATE),
        last_error=None,
    )


def log_lines(
    rows: RunRows | None, step_key: str | None, attempt: int | None, after_id: int = 0
) -> list[LogRecord]:
    """The run's log lines after ``after_id``, of one step and attempt when given."""
    if rows is None:
        return []
    return [
        line
        for line in list(rows.logs)
        if line.id > after_id
        and (step_key is None or line.step_key == step_key)
        and (attempt is None or line.attempt == attempt)
    ]
