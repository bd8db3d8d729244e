"""The HTTP status of every Conveyor error: one table in the API, inherited along the MRO."""

from __future__ import annotations

import inspect
import json

import pytest

from conveyor.api.errors import handle_error, status_for
from conveyor.orchestrator import errors
from conveyor.orchestrator.errors import ConveyorError, NotFound

#: Every error class of the tree and the status the API answers it with. These are the
#: statuses the errors had when each carried its own: a change here is a change users see.
EXPECTED = {
    "ConveyorError": 500,
    "NotFound": 404,
    "Conflict": 409,
    "IllegalTransition": 409,
    "SpecError": 422,
    "TemplateError": 422,
    "TemplateLimit": 422,
    "TemplateStopped": 422,
    "PluginError": 500,
    "StoreUnavailable": 503,
    "SchemaOutdated": 503,
    "StepsMoved": 500,
    "NothingToClaim": 404,
    "SecretsUnavailable": 422,
    "SecretRefused": 422,
    "SourceRefused": 422,
    "BrokerUnavailable": 503,
    "StepFailed": 500,
    "StepTimeout": 500,
    "StepCancelled": 500,
    "SandboxError": 500,
    "WorkspaceRefused": 500,
    "ArtifactError": 422,
    "ArtifactNotFound": 404,
    "ArtifactExpired": 404,
    "ChecksumMismatch": 500,
    "ArtifactStoreUnavailable": 503,
    # Not Conveyor errors before they joined the tree: the API answered them 500 then too.
    "ScanError": 500,
    "ScanOutputError": 500,
    "SarifError": 500,
    "SuppressionError": 500,
    "BadRequest": 400,
    "UnstorableValue": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "Unreachable": 503,
}


def _tree() -> dict[str, type[ConveyorError]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ConveyorError) and cls.__module__ == errors.__name__
    }


def test_the_table_names_every_error_of_the_tree() -> None:
    """Given errors.py, Then each of its error classes has an expected status here."""
    assert sorted(_tree()) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_each_error_answers_with_its_status(name: str, status: int) -> None:
    """Given an error of the tree, When the API handles it, Then its status and message."""
    error = _tree()[name]("what went wrong")

    answer = handle_error(error)

    assert status_for(type(error)) == status
    assert answer.status_code == status
    detail = json.loads(answer.get_data())["detail"]
    if status == 503:  # an outage names the dependency, never its own words (where it lives)
        assert detail.startswith("the ") and "what went wrong" not in detail
    else:
        assert detail == "what went wrong"


def test_an_error_defined_elsewhere_answers_with_its_parents_status() -> None:
    """Given a plugin's own subclass of NotFound, Then it is a 404 like NotFound."""

    class NoSuchWidget(NotFound):
        """No such widget."""

    assert status_for(NoSuchWidget) == 404


def test_core_errors_carry_no_http_status() -> None:
    """Given the tree, Then HTTP is the API's business: no error class names a status."""
    assert [name for name, cls in _tree().items() if hasattr(cls, "http_status")] == []


@pytest.mark.parametrize("name", ["ScanOutputError", "SarifError", "SuppressionError"])
def test_scan_errors_are_still_value_errors(name: str) -> None:
    """Given a scanning error, Then code that catches ValueError still catches it."""
    with pytest.raises(ValueError, match="bad report"):
        raise _tree()[name]("bad report")
