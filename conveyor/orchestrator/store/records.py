"""What the store hands back, and what it is given to create a run: plain frozen records,
never driver rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.orchestrator.status import RunStatus, StepStatus


@dataclass(frozen=True)
class RunRecord:
    """One run of a pipeline (a row of workflow_instances)."""

    id: str
    definition_id: str
    pipeline: str
    status: RunStatus
    params: dict[str, Any]
    submitted_by: str | None
    error: str | None
    event_seq: int
    deadline: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    #: When retention deleted its artifacts since it last ended, if it did.
    artifacts_expired_at: datetime | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from creation to completion (or None while running)."""
        if self.completed_at is None:
            return None
        return (self.completed_at - self.created_at).total_seconds()


@dataclass(frozen=True)
class StepRecord:
    """One step of one run (a row of workflow_steps)."""

    id: str
    run_id: str
    key: str
    position: int
    type: str
    status: StepStatus
    attempts: int
    queue: str
    last_error: str | None
    exit_code: int | None
    outputs: dict[str, Any] | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    available_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def duration(self) -> float | None:
        """Seconds the latest attempt ran (or None if it never started)."""
        if self.started_at is None:
            return None
        if self.completed_at is None or self.completed_at < self.started_at:
            return None
        return (self.completed_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class EventRecord:
    """One entry of a run's append-only event log."""

    seq: int
    run_id: str
    step_key: str | None
    type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LogRecord:
    """One line of a step's log."""

    id: int
    step_key: str
    attempt: int
    stream: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class StepSeed:
    """What the store needs to create one step row of a new run."""

    key: str
    type: str
    queue: str


@dataclass(frozen=True)
class NewRun:
    """Everything written in the one transaction that creates a run."""

    pipeline: str
    source: str
    plan: dict[str, Any]
    params: dict[str, Any]
    steps: Sequence[StepSeed]
    submitted_by: str | None = None
    idempotency_key: str | None = None
    deadline: datetime | None = None
    #: The registered definition version this run executes; None writes ``source`` as
    #: the newest version of ``pipeline`` (or reuses it when unchanged).
    definition_id: str | None = None
    #: The run's secrets, sealed by the Vault; never the secrets themselves.
    sealed_secrets: str | None = None
    #: The new run's id when the caller chose it (a source archive is stored under it
    #: before the run exists); None: a fresh one.
    id: str | None = None


def run_from_row(row: Mapping[Any, Any]) -> RunRecord:
    """Build a RunRecord from a workflow_instances row."""
    return RunRecord(
        id=row["id"],
        definition_id=row["definition_id"],
        pipeline=row["pipeline"],
        status=RunStatus(row["status"]),
        params=row["params"] or {},
        submitted_by=row["submitted_by"],
        error=row["error"],
        event_seq=row["event_seq"],
        deadline=row["deadline"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row.get("completed_at"),
        artifacts_expired_at=row.get("artifacts_expired_at"),
    )


def step_from_row(row: Mapping[Any, Any]) -> StepRecord:
    """Build a StepRecord from a workflow_steps row."""
    row = dict(row)  # a plain dict: .get on a driver row is slow for missing keys
    return StepRecord(
        id=row["id"],
        run_id=row["instance_id"],
        key=row["step_key"],
        position=row["position"],
        type=row["type"],
        status=StepStatus(row["status"]),
        attempts=row["attempts"],
        queue=row["queue"],
        last_error=row["last_error"],
        exit_code=row.get("exit_code"),
        outputs=row.get("outputs"),
        lease_owner=row.get("lease_owner"),
        lease_expires_at=row.get("lease_expires_at"),
        available_at=row.get("available_at"),
        started_at=row.get("started_at"),
        completed_at=row.get("completed_at"),
    )
