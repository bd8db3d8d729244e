"""``step.docker_push``: push an image to a registry, optionally under a registry prefix.

Credentials come from ``auth`` (template them from secrets: they are masked in every
log and never stored in outputs) or else from the engine's own configuration (the
Docker CLI's ``config.json`` of the worker, as ``docker login`` writes it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import RegistryAuth, StepContext
from conveyor.orchestrator.queues import SANDBOX

from .common import image_engine


class RegistryCredentials(BaseModel):
    """A registry user and password."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(description="Registry user.")
    password: str = Field(
        description="Password or token; write it as a secret, `{{ .secrets.REGISTRY_TOKEN }}`."
    )


class DockerPushConfig(BaseModel):
    """The seed's keys for ``step.docker_push``, plus ``auth``."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="Local image to push, e.g. `myapp:1.2.3`.")
    registry: str | None = Field(
        default=None,
        description="Registry host (and path) prepended to the image, e.g. `ghcr.io/myorg`; "
        "the image is tagged with it before the push.",
    )
    auth_provider: str | None = Field(
        default=None,
        description="Name of the credentials' source (informational: credentials come from "
        "`auth` or the engine's configuration).",
    )
    auth: RegistryCredentials | None = Field(
        default=None,
        description="Credentials for this push; without them the engine's configuration "
        "(`docker login`) applies.",
    )


class DockerPush:
    """Pushes a Docker image to a remote registry."""

    Config: type[BaseModel] = DockerPushConfig
    queue = SANDBOX
    shell_fields: frozenset[str] = frozenset()

    def run(self, ctx: StepContext, config: DockerPushConfig) -> dict[str, Any]:
        """Tag under the registry when one is given, push; outputs the pushed digest."""
        engine = image_engine(ctx)
        reference = _reference(config.image, config.registry)
        if reference != config.image:
            engine.tag(config.image, reference)
            ctx.log.line(f"tagged {config.image} as {reference}", "system")
        auth = RegistryAuth(config.auth.username, config.auth.password) if config.auth else None
        digest = engine.push(
            reference, auth=auth, cancel=ctx.cancel, deadline=ctx.deadline, on_line=ctx.log.line
        )
        ctx.log.line(f"pushed {reference} as {digest}", "system")
        return {
            "image": reference,
            "registry": config.registry or "",
            "digest": digest,
            "reference": f"{_repository(reference)}@{digest}",
            "auth_provider": config.auth_provider or "",
        }


def _reference(image: str, registry: str | None) -> str:
    """``registry/image``, unless the image already names that registry."""
    if not registry:
        return image
    prefix = registry.rstrip("/") + "/"
    return image if image.startswith(prefix) else prefix + image


def _repository(reference: str) -> str:
    """The reference without its tag (a port's colon is not a tag's)."""
    name, colon, tag = reference.rpartition(":")
    return name if colon and "/" not in tag else reference
