"""The configuration keys every scan step shares (the seed's, and Conveyor's additions)."""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from conveyor.orchestrator.durations import Duration
from conveyor.orchestrator.scanning.gate import FailOn
from conveyor.orchestrator.scanning.severity import THRESHOLD_WORDS, Severity, parse_threshold

#: A severity word of the one table (``high``, ``error``, ``WARNING``…), stored on the scale.
Threshold = Annotated[
    Severity,
    BeforeValidator(lambda value: value if isinstance(value, Severity) else parse_threshold(value)),
    PlainSerializer(lambda severity: severity.value, return_type=str),
    # What a pipeline may write: any word of the table, in any case, not just the enum.
    WithJsonSchema(
        {
            "type": "string",
            "description": "A severity word, any case: " + ", ".join(THRESHOLD_WORDS),
        }
    ),
]


class ScanConfig(BaseModel):
    """Keys of every scan step; the step types add their target and threshold."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(
        default=None, description="The scanner's image; defaults to the tool's official one."
    )
    runner: Literal["docker", "local"] = Field(
        default="docker",
        description="docker: the scanner's image in the Docker sandbox; local: a binary on "
        "the worker's host (PATH, or beside Conveyor's Python).",
    )
    output_format: Literal["sarif", "json"] = Field(
        default="sarif",
        description="Which stored report the `report` output names (both are stored).",
    )
    fail_on: FailOn = Field(
        default=FailOn.ANY,
        description="any: every finding at or above the threshold fails; new: only those "
        "absent from the last successful run of this pipeline on this branch; never: report.",
    )
    unknown_severity: Threshold = Field(
        default=Severity.HIGH, description="How the gate ranks findings the scanner did not rate."
    )
    suppressions: str | None = Field(
        default=None,
        description="Suppressions file in the workspace (default: .conveyor-suppressions.yaml "
        "when it exists).",
    )
    baseline_branch: str | None = Field(
        default=None,
        description="For fail_on: new, the branch to compare with when this run's branch has "
        "no successful run yet (e.g. main).",
    )
    command: str | None = Field(
        default=None,
        description="scanner: sarif only: a command that writes SARIF to $CONVEYOR_SCAN_REPORT.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the scanner."
    )
    network_mode: str | None = Field(
        default=None, description="The scanner container's network (docker runner; none)."
    )
    memory_limit: str | int | None = Field(default=None, description="e.g. 2g (docker runner).")
    timeout: Duration | None = Field(default=None, description="Limit for the scan, e.g. 10m.")

    @model_validator(mode="after")
    def _command_for_sarif(self) -> ScanConfig:
        generic = getattr(self, "scanner", None) == "sarif"
        if generic != (self.command is not None):
            raise ValueError("command is required with scanner: sarif, and only with it")
        return self


def workspace_relative(path: str) -> str:
    """``/workspace/src`` or ``src`` as the scanner sees it from the workspace: ``src``."""
    inside = path
    if path == "/workspace" or path.startswith("/workspace/"):
        inside = path[len("/workspace") :].lstrip("/")
    normal = posixpath.normpath(inside or ".")
    if inside.startswith("/") or normal == ".." or normal.startswith("../"):
        raise ValueError(
            f"{path!r} is outside the workspace (use /workspace/... or a relative path)"
        )
    return normal


def _source(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a path is a string")
    workspace_relative(value)  # refuse it now, at plan time, if it leaves the workspace
    return value


#: A path under the workspace (``/workspace/src`` or ``src``), checked at plan time.
SourcePath = Annotated[str, BeforeValidator(_source)]
