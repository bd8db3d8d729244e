"""Registered pipelines: register a file (a new version only when it changed), list, read."""

from __future__ import annotations

from urllib.parse import quote

from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.store import Definition, Definitions

from .models import MAX_VERSION, PipelineList, PipelineVersion, RegisterPipeline
from .routing import Call, Reply


def version_of(
    definition: Definition, *, created: bool = False, text: bool = False
) -> PipelineVersion:
    """The API's view of a registered definition (with its YAML when ``text``)."""
    return PipelineVersion(
        name=definition.name,
        version=definition.version,
        id=definition.id,
        created_at=definition.created_at,
        created=created,
        definition=definition.source if text else None,
    )


def register_pipeline(call: Call[RegisterPipeline, None]) -> Reply:
    """Compile the file (422 with every problem) and store it as the pipeline's newest version."""
    services, body = call.services, call.body
    compiled = services.compiler.compile(body.definition)
    plan = compiled.select(body.pipeline)
    definition, created = services.definitions.register(plan.pipeline, compiled.source)
    location = f"/api/v1/pipelines/{quote(plan.pipeline)}/versions/{definition.version}"
    model = version_of(definition, created=created)
    return Reply(model, 201 if created else 200, {"Location": location})


def list_pipelines(call: Call[None, None]) -> PipelineList:
    """The newest version of every registered pipeline, by name."""
    return PipelineList(items=[version_of(d) for d in call.services.definitions.latest()])


def get_pipeline(call: Call[None, None], name: str) -> PipelineList:
    """Every version of one pipeline, newest first."""
    return PipelineList(items=[version_of(d) for d in call.services.definitions.versions(name)])


def get_pipeline_version(call: Call[None, None], name: str, version: str) -> PipelineVersion:
    """One version of a pipeline, with its YAML."""
    definitions = call.services.definitions
    return version_of(find_definition(definitions, name, _number(version)), text=True)


def find_definition(definitions: Definitions, name: str, version: int | None) -> Definition:
    """A registered version (the newest by default), or a 404 that says which is missing."""
    try:
        return definitions.get(name, version)
    except NotFound:
        which = f"version {version} of pipeline" if version else "registered pipeline"
        raise NotFound(f"no {which} {name!r}") from None


def _number(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise NotFound(f"no version {text!r}: versions are numbers")
    if len(text) > len(str(MAX_VERSION)) or int(text) > MAX_VERSION:
        raise NotFound(f"no version {text}: versions go up to {MAX_VERSION}")
    return int(text)
