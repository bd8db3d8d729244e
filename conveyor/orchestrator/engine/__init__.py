"""Moving runs: the runtime, advancing, claims, one attempt and its executor, the monitor,
recovery, dispatch, and the wiring that builds them once per process.

Its public face is below; everything else is the engine's own business.
"""

from typing import TYPE_CHECKING

from conveyor.orchestrator.faces import lazy

if TYPE_CHECKING:
    from conveyor.orchestrator.engine.attempt import Attempt as Attempt
    from conveyor.orchestrator.engine.attempt import Finished as Finished
    from conveyor.orchestrator.engine.attempt import Outcome as Outcome
    from conveyor.orchestrator.engine.due import DueTimer as DueTimer
    from conveyor.orchestrator.engine.embedded import EmbeddedEngine as EmbeddedEngine
    from conveyor.orchestrator.engine.executor import Executor as Executor
    from conveyor.orchestrator.engine.executor import Watch as Watch
    from conveyor.orchestrator.engine.opening import open_store as open_store
    from conveyor.orchestrator.engine.opening import recover_abandoned as recover_abandoned
    from conveyor.orchestrator.engine.recovery import Reconciler as Reconciler
    from conveyor.orchestrator.engine.recovery import retry_run as retry_run
    from conveyor.orchestrator.engine.runtime import Runtime as Runtime
    from conveyor.orchestrator.engine.source_archive import Limits as Limits
    from conveyor.orchestrator.engine.source_archive import Packed as Packed
    from conveyor.orchestrator.engine.source_archive import WorkspaceSeeder as WorkspaceSeeder
    from conveyor.orchestrator.engine.source_archive import drop_source as drop_source
    from conveyor.orchestrator.engine.source_archive import is_gzip as is_gzip
    from conveyor.orchestrator.engine.source_archive import new_run_id as new_run_id
    from conveyor.orchestrator.engine.source_archive import pack_source as pack_source
    from conveyor.orchestrator.engine.source_archive import store_source as store_source
    from conveyor.orchestrator.engine.source_archive import unpack_source as unpack_source
    from conveyor.orchestrator.engine.wiring import Core as Core
    from conveyor.orchestrator.engine.wiring import wire as wire

__getattr__ = lazy(
    __name__,
    {
        "attempt": ["Attempt", "Finished", "Outcome"],
        "due": ["DueTimer"],
        "embedded": ["EmbeddedEngine"],
        "executor": ["Executor", "Watch"],
        "opening": ["open_store", "recover_abandoned"],
        "recovery": ["Reconciler", "retry_run"],
        "runtime": ["Runtime"],
        "source_archive": [
            "Limits",
            "Packed",
            "WorkspaceSeeder",
            "drop_source",
            "is_gzip",
            "new_run_id",
            "pack_source",
            "store_source",
            "unpack_source",
        ],
        "wiring": ["Core", "wire"],
    },
)
