"""One error tree for Conveyor.

Every error carries a message for a person; the docstring of each class is its default
message. Driver errors (SQLAlchemy, YAML, Jinja2) are translated into these at the
boundary where they happen, so callers only ever catch ``ConveyorError``.

Every Conveyor error class lives here, whichever package raises it, grouped by area.
What an error means over HTTP is the API's business: ``conveyor.api.errors`` maps these
classes to status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConveyorError(Exception):
    """Conveyor failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__class__.__doc__ or "error").strip()
        super().__init__(self.message)


# -- lookups and state: what a request asks for is missing or not allowed now -----------


class NotFound(ConveyorError):
    """Not found."""


class Conflict(ConveyorError):
    """The request conflicts with the current state."""


#: What a write the database refused as conflicting says (the driver's words name
#: constraints and key values: they go to the log, not to a client).
CONFLICTING_WRITE = "the write conflicts with what is stored (it was made meanwhile)"


class IllegalTransition(Conflict):
    """That status change is not allowed."""


# -- pipelines: definitions, templates, plugins ---------------------------------------


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


class TemplateLimit(TemplateError):
    """A template did more work, or took longer, than rendering one may."""


class TemplateStopped(TemplateError):
    """Rendering stopped: the step's deadline passed or it was cancelled."""


class PluginError(ConveyorError):
    """A plugin could not be loaded."""


# -- the store: the database and the run transaction ----------------------------------


class StoreUnavailable(ConveyorError):
    """The execution store is unavailable."""


class SchemaOutdated(ConveyorError):
    """The database schema is not at the current revision: run `conveyor db upgrade`."""


class StepsMoved(ConveyorError):
    """A step changed although the run's lock was held: nothing of the transaction stays."""


class NothingToClaim(NotFound):
    """The step is not queued at that attempt (or the run is gone): nothing was locked."""


class SecretsUnavailable(ConveyorError):
    """The run's secrets cannot be opened here."""


class SecretRefused(ConveyorError):
    """A secret is too short to be masked in logs: nothing was stored."""


# -- dispatch: the message broker between the engine and the workers -------------------


class BrokerUnavailable(ConveyorError):
    """The message broker is unavailable."""


# -- steps: one attempt of one step ---------------------------------------------------


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


class WorkspaceRefused(StepFailed):
    """The run's workspace could not be handed to this host (unsafe, corrupt or missing)."""


# -- artifacts ------------------------------------------------------------------------


class ArtifactError(ConveyorError):
    """The artifact could not be stored or read."""


class ArtifactNotFound(ArtifactError):
    """No such artifact."""


class ArtifactExpired(ArtifactNotFound):
    """The artifact was deleted when its run's retention ran out."""


class ChecksumMismatch(ArtifactError):
    """The artifact's content does not match its checksum."""


class SourceRefused(ConveyorError):
    """The source archive is not one Conveyor unpacks (unsafe, malformed or too large)."""


class ArtifactStoreUnavailable(ArtifactError):
    """The artifact store cannot be reached."""


# -- scanning: reports and suppression files ------------------------------------------
# These are ValueErrors too, as they were before they joined the tree: a scanner
# provider written against that (``except ValueError`` around a parse) keeps working.


class ScanError(ConveyorError, ValueError):
    """A scan's input could not be read."""


class ScanOutputError(ScanError):
    """The scanner's report could not be read."""


class SarifError(ScanError):
    """The document is not a SARIF log this reader understands."""


class SuppressionError(ScanError):
    """The suppressions file is not valid."""


# -- API requests ---------------------------------------------------------------------


class BadRequest(ConveyorError):
    """The request is malformed."""


class UnstorableValue(BadRequest):
    """A value cannot be stored or compared: too deep or large, a NUL, NaN, out of range."""


class Unauthorized(ConveyorError):
    """A valid bearer token is required: send `Authorization: Bearer <token>`."""


class Forbidden(ConveyorError):
    """This token's role may not do that."""


# -- API clients (the CLI talking to a remote API) ------------------------------------


class Unreachable(StoreUnavailable):
    """The API could not be reached."""
