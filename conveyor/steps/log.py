"""``step.log``: write a message to the step log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import StepContext
from conveyor.orchestrator.queues import CONTROL

Level = Literal["debug", "info", "warn", "error"]
#: Only the levels a reader should not miss carry a prefix.
_PREFIX = {"debug": "", "info": "", "warn": "WARN: ", "error": "ERROR: "}


class LogConfig(BaseModel):
    """Configuration of ``step.log``."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="Text to write to the step log; templates are rendered.")
    level: Level = Field(
        default="info",
        description="debug, info, warn or error; warn and error lines are prefixed and go "
        "to the stderr stream.",
    )


class Log:
    """Writes its message, line by line, to the step log."""

    Config: type[BaseModel] = LogConfig
    queue = CONTROL
    shell_fields: frozenset[str] = frozenset()
    #: In-process and instant: coalesced with the run's other brief steps.
    brief = True

    def run(self, ctx: StepContext, config: LogConfig) -> dict[str, str]:
        """Log every line of the message; the message is also the step's output."""
        prefix = _PREFIX[config.level]
        stream = "stderr" if prefix else "stdout"
        for line in config.message.splitlines() or [""]:
            ctx.log.line(f"{prefix}{line}", stream)
        return {"message": config.message}
