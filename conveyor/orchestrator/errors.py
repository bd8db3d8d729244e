"""One error tree for Conveyor.

Every error carries a message for a person; the docstring of each class is its default
message. Driver errors (SQLAlchemy, YAML, Jinja2) are translated into these at the
boundary where they happen, so callers only ever catch ``ConveyorError``.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConveyorError(Exception):
    """Conveyor failed."""

    #: HTTP status the API maps this error to.
    http_status = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__class__.__doc__ or "error").strip()
        super().__init__(self.message)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, at a path and (when known) a line."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        prefix = f"{self.path}: " if self.path else ""
        return f"{prefix}{self.message}{where}"


class SpecError(ConveyorError):
    """The pipeline definition is invalid."""

    http_status = 422

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        # In file order, as an editor would show them; problems with no line come first.
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__("\n".join(str(p) for p in problems))


class TemplateError(ConveyorError):
    """A template could not be rendered."""

    http_status = 422


class NotFound(ConveyorError):
    """Not found."""

    http_status = 404


class Conflict(ConveyorError):
    """The request conflicts with the current state."""

    http_status = 409


class IllegalTransition(Conflict):
    """That status change is not allowed."""


class StepsMoved(ConveyorError):
    """A step changed although the run's lock was held: nothing of the transaction stays."""


class NothingToClaim(NotFound):
    """The step is not queued at that attempt (or the run is gone): nothing was locked."""


class SecretsUnavailable(ConveyorError):
    """The run's secrets cannot be opened here."""

    http_status = 422


class StoreUnavailable(ConveyorError):
    """The execution store is unavailable."""

    http_status = 503


class SchemaOutdated(ConveyorError):
    """The database schema is not at the current revision: run `conveyor db upgrade`."""

    http_status = 503


class StepFailed(ConveyorError):
    """The step failed."""

    def __init__(self, message: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StepTimeout(StepFailed):
    """The step timed out."""


class StepCancelled(ConveyorError):
    """The step was cancelled."""


class SandboxError(StepFailed):
    """The sandbox failed."""


class PluginError(ConveyorError):
    """A plugin could not be loaded."""
