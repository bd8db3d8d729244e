"""The Docker family: ``step.docker_build``, ``step.docker_push`` and ``step.docker_run``.

- ``build``, ``push``, ``run``: the three step types
- ``common``: the image engine behind ``ctx.provider("docker")`` and the run's workspace

The engine itself is a provider (``docker``); these steps never import it.
"""

from .build import DockerBuild
from .push import DockerPush
from .run import DockerRun

__all__ = ["DockerBuild", "DockerPush", "DockerRun"]
