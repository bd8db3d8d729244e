"""Response and query models of the findings routes (OpenAPI schemas come from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from conveyor.orchestrator.scanning.severity import Severity

from .models import Query


class FindingQuery(Query):
    """Filters of a run's findings."""

    severity: str | None = Field(
        default=None, description="Comma-separated severities, e.g. `critical,high`."
    )
    scanner: str | None = Field(default=None, description="Only this scanner's, e.g. `semgrep`.")
    step: str | None = Field(default=None, description="Only this step's.")
    new: bool = Field(default=False, description="Only findings absent from the baseline run.")

    @field_validator("severity")
    @classmethod
    def _severities(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = {s.value for s in Severity}
        wanted = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise ValueError(f"unknown severity {', '.join(unknown)} (use {', '.join(known)})")
        return ",".join(wanted)


class FindingModel(BaseModel):
    """One finding of one scan step."""

    step_key: str
    scanner: str
    rule_id: str
    severity: Severity
    native_severity: str = Field(description="The scanner's own word or score.")
    message: str
    location: str = Field(description="File path, or package and where it was found.")
    line: int | None
    fingerprint: str = Field(description="Stable across runs: what suppressions name.")
    new: bool | None = Field(description="Absent from the baseline run; null: no baseline.")
    suppressed: str | None = Field(description="Why it does not count, when suppressed.")
    package: str | None
    version: str | None
    fixed_version: str | None = Field(description="Empty: no fix is known.")
    created_at: datetime

    @classmethod
    def of(cls, row: dict[str, Any]) -> FindingModel:
        """The API's view of a stored finding."""
        return cls.model_validate({**row, "new": row["is_new"]})


class ScanReportModel(BaseModel):
    """One scan step of a run: its scanner, branch, counts and gate."""

    step_key: str
    scanner: str
    branch: str | None
    summary: dict[str, int]
    passed_gate: bool
    created_at: datetime


class FindingList(BaseModel):
    """A run's findings, worst first, and the scan steps they came from."""

    items: list[FindingModel]
    reports: list[ScanReportModel]
