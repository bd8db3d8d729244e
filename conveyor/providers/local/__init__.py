"""The local backend: this host's processes and disk, with no service to run.

- ``sandbox``: steps as host processes in the run's workspace (``conveyor.sandboxes``)
- ``artifacts``: artifacts under the data directory (``conveyor.artifact_stores``)
"""

from .artifacts import LocalArtifactStore
from .sandbox import LocalSandbox, LocalSandboxFactory

__all__ = ["LocalArtifactStore", "LocalSandbox", "LocalSandboxFactory"]
