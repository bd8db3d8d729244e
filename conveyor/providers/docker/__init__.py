"""The Docker backend: the ``docker`` sandbox and the ``docker`` image engine provider.

Both talk to the engine the Docker CLI would use (``DOCKER_HOST``) and give containers
the same strict defaults (``policy``). The modules behind them:

- ``sandbox``: one container per step on the run's workspace (``conveyor.sandboxes``)
- ``engine``: build, tag, push and run images (``conveyor.providers``, ``ctx.provider("docker")``)
- ``policy``: the create options a container may have; ``containers``: removal, watching
- ``progress``: the engine's build and push streams as log lines and one-line errors
- ``archive``: tars in and out of containers; ``client``: the SDK client and its errors
"""

from .client import RUN_LABEL, STEP_LABEL
from .engine import DockerEngine
from .sandbox import DockerSandbox, DockerSandboxFactory

__all__ = ["RUN_LABEL", "STEP_LABEL", "DockerEngine", "DockerSandbox", "DockerSandboxFactory"]
