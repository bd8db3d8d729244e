"""The seams of Conveyor: Protocols that plugins implement and the runtime calls.

Step types, sandboxes, artifact stores, cloud providers and dispatchers live outside
the orchestrator package; they meet it only through these shapes. The execution store
is one too (``Store``, ``RunTransaction``): SQL implements it, and so does the in-memory
twin in ``conveyor.orchestrator.testing``.

One module per seam, every name re-exported here:

- ``steps``: ``StepType``, ``StepContext``, ``StepLogger``, ``StepRef``, ``Dispatcher``.
- ``sandbox``: ``Sandbox``, ``SandboxFactory``, ``SandboxConfig``, ``SandboxRequest``,
  ``ExecResult``, ``LineSink``, ``OutputSink``.
- ``artifacts``: ``ArtifactStore``, ``RunSources``, ``WorkspaceBlobs``.
- ``images``: ``ImageEngine``, ``BuildSpec``, ``BuiltImage``, ``ContainerResult``,
  ``RegistryAuth``.
- ``sources``: ``ObjectSource``, ``UrlSource``.
- ``store``: ``Store``, ``RunTransaction``, ``LogLines``, ``WorkspaceHeads``,
  ``WorkerHosts``.

Importing this package loads no SQLAlchemy: the store's records are plain dataclasses.
"""

from conveyor.orchestrator.contracts.artifacts import ArtifactStore, RunSources, WorkspaceBlobs
from conveyor.orchestrator.contracts.images import (
    BuildSpec,
    BuiltImage,
    ContainerResult,
    ImageEngine,
    RegistryAuth,
)
from conveyor.orchestrator.contracts.sandbox import (
    ExecResult,
    LineSink,
    OutputSink,
    Sandbox,
    SandboxConfig,
    SandboxFactory,
    SandboxRequest,
)
from conveyor.orchestrator.contracts.sources import ObjectSource, UrlSource
from conveyor.orchestrator.contracts.steps import (
    Dispatcher,
    StepContext,
    StepLogger,
    StepRef,
    StepType,
)
from conveyor.orchestrator.contracts.store import (
    KEEP,
    Dispatch,
    ExitCode,
    LogLines,
    Move,
    RunTransaction,
    Store,
    WorkerHosts,
    WorkspaceHead,
    WorkspaceHeads,
)

__all__ = [
    "KEEP",
    "ArtifactStore",
    "BuildSpec",
    "BuiltImage",
    "ContainerResult",
    "Dispatch",
    "Dispatcher",
    "ExecResult",
    "ExitCode",
    "ImageEngine",
    "LineSink",
    "LogLines",
    "Move",
    "ObjectSource",
    "OutputSink",
    "RegistryAuth",
    "RunSources",
    "RunTransaction",
    "Sandbox",
    "SandboxConfig",
    "SandboxFactory",
    "SandboxRequest",
    "StepContext",
    "StepLogger",
    "StepRef",
    "StepType",
    "Store",
    "UrlSource",
    "WorkerHosts",
    "WorkspaceBlobs",
    "WorkspaceHead",
    "WorkspaceHeads",
]
