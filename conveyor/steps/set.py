"""``step.set``: put values into the run's context for later steps to read."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.orchestrator.contracts import StepContext
from conveyor.orchestrator.queues import CONTROL

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class SetConfig(BaseModel):
    """Configuration of ``step.set``."""

    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(
        description=(
            "Values to publish as this step's outputs; templates are rendered first. "
            "Later steps read them as {{ .steps.NAME.key }}."
        ),
    )

    @field_validator("values")
    @classmethod
    def _keys_are_names(cls, values: dict[str, Any]) -> dict[str, Any]:
        bad = [key for key in values if not _KEY.fullmatch(key)]
        if bad:
            raise ValueError(f"keys must be names like build_id or image-tag, not {bad[0]!r}")
        return values


class Set:
    """Publishes its ``values`` as outputs, so later steps can use them."""

    Config: type[BaseModel] = SetConfig
    queue = CONTROL
    shell_fields: frozenset[str] = frozenset()
    #: In-process and instant: coalesced with the run's other brief steps.
    brief = True

    def run(self, ctx: StepContext, config: SetConfig) -> dict[str, Any]:
        """Return the values as outputs and note their names in the step log."""
        ctx.log.line(f"set {', '.join(config.values) or 'nothing'}")
        return dict(config.values)
