"""Wiring: the one place that builds Conveyor's core for a process.

The embedded CLI, the API and every worker process build theirs here, each once:
one store, one compiler, one runtime (so one plan cache and one set of opened
secrets), and where steps run, one executor. Only the dispatcher differs: a thread
pool in the embedded engine, Celery in the distributed shape, none in an API that
leaves sending to the reconciler.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from conveyor.orchestrator.artifacts.retention import ArtifactRetention, ExplainedArtifacts
from conveyor.orchestrator.contracts import ArtifactStore, Dispatcher, StepType, WorkspaceBlobs
from conveyor.orchestrator.engine.executor import Executor
from conveyor.orchestrator.engine.recovery import Reconciler
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.engine.source_archive import WorkspaceSeeder
from conveyor.orchestrator.engine.vault import make_vault
from conveyor.orchestrator.engine.workspace import Workspaces, host_id
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.pipeline.plan import Compiler
from conveyor.orchestrator.plugins import Sandboxes, StepTypes, load_artifact_store
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore


@dataclass(frozen=True)
class Core:
    """One process's Conveyor: what the CLI, the API and the workers work with."""

    settings: Settings
    store: SqlStore
    compiler: Compiler
    runtime: Runtime
    #: The configured artifact store (local or S3), made on first use.
    artifact_store: Callable[[], ArtifactStore]
    #: Deletes artifacts past their retention.
    retention: ArtifactRetention
    #: Puts right what the broker or a worker dropped (run periodically by workers).
    reconciler: Reconciler
    #: Runs steps; None where steps run elsewhere (an API with workers behind it).
    executor: Executor | None = None

    def running(self) -> Executor:
        """The executor of a core that runs steps."""
        if self.executor is None:
            raise ConveyorError("this process was wired without an executor: it runs no steps")
        return self.executor


def wire(
    settings: Settings,
    store: SqlStore,
    *,
    dispatcher: Dispatcher | None = None,
    run_steps: bool = True,
    step_types: Mapping[str, StepType] | None = None,
    sandboxes: Sandboxes | None = None,
    owner: str | None = None,
    queues: Collection[str] | None = None,
    compiler: Compiler | None = None,
    stopping: Callable[[], bool] | None = None,
    handoff: bool = False,
) -> Core:
    """Build the core on ``store``; ``dispatcher`` sends the steps that become ready.

    With ``run_steps``, an executor runs steps in this process, as ``owner`` (default:
    host and pid), going on only with steps of ``queues`` (default: any). ``compiler``:
    the process's compiler when it has one already (``step_types`` are then its).
    ``stopping``: True once the process is shutting down; it then takes no new step
    (see ``Runtime``). ``handoff``: this process's host keeps its own copies of runs'
    workspaces, kept in step with other hosts' through the artifact store (workers
    that share no workspace directory); else a run's workspace is one directory.
    """
    if compiler is None:  # else the process compiled with it already: it keeps the one
        types = StepTypes() if step_types is None else step_types
        compiler = Compiler.for_settings(settings, types)
    runtime = Runtime(
        store,
        compiler.templates,
        dispatcher,
        lease_seconds=settings.lease_seconds,
        vault=make_vault(settings, embedded=store.is_sqlite),
        stopping=stopping,
    )
    raw = functools.cache(lambda: load_artifact_store(settings))
    # What steps see: a miss says when and why a run's artifacts went.
    explained = functools.cache(lambda: ExplainedArtifacts(raw(), store))
    workspaces = _workspaces(settings, store, raw, handoff)
    executor = None
    if run_steps:
        executor = Executor(
            runtime,
            compiler.step_types,
            sandboxes or Sandboxes(settings),
            settings,
            store=store,
            templates=compiler.templates,
            artifacts=explained,
            owner=owner,
            queues=queues,
            workspaces=workspaces,
        )
    retention = ArtifactRetention.from_settings(store, settings, explained)
    reconciler = Reconciler(
        runtime,
        stale_after=settings.stale_after_seconds,
        retention=retention,
        workspaces=workspaces,
    )
    return Core(settings, store, compiler, runtime, raw, retention, reconciler, executor)


def _workspaces(
    settings: Settings, store: SqlStore, raw: Callable[[], ArtifactStore], handoff: bool
) -> Workspaces:
    """Runs' workspaces on this host: seeded from their source archives, and handed
    over through the artifact store when ``handoff``."""
    seeder = WorkspaceSeeder(settings, raw)
    if not handoff:
        return Workspaces(seed=seeder.ensure)
    from conveyor.orchestrator.workspaces.handoff import WorkspaceHandoff  # noqa: PLC0415

    return Workspaces(
        seed=seeder.ensure,
        heads=store,
        handoff=WorkspaceHandoff(
            settings.workspace_root,
            settings.data_dir / "workspace-state",
            lambda: _blobs(raw()),
            store,
            host_id(settings.data_dir),
        ),
    )


def _blobs(artifacts: ArtifactStore) -> WorkspaceBlobs:
    """The artifact store as the keeper of workspace blobs; refused if it cannot be."""
    if not isinstance(artifacts, WorkspaceBlobs):
        raise ConveyorError(
            f"the artifact store {type(artifacts).__name__} cannot keep workspaces: "
            "share the workspace directory (CONVEYOR_WORKSPACE_SHARED) or use local or s3"
        )
    return artifacts
