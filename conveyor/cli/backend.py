"""The store side of the CLI, loaded on first use.

SQLAlchemy and alembic take about a third of a second to import, which ``validate``,
``step-types``, ``--help`` and the refusal of a bad pipeline file never need; so the
modules that bring them in are imported here, inside the functions that use them. The
compiler and the plugins (pydantic, Jinja2) load the same way: ``--version`` needs none.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING

from conveyor.orchestrator.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.orchestrator.engine import EmbeddedEngine
    from conveyor.orchestrator.pipeline import Compiler
    from conveyor.orchestrator.settings import Settings
    from conveyor.orchestrator.store import SqlStore


def compiler(settings: Settings) -> Compiler:
    """The compiler the engine builds (``Compiler.for_settings``), without the store."""
    from conveyor.orchestrator.pipeline import Compiler  # noqa: PLC0415  (see above)
    from conveyor.orchestrator.plugins import StepTypes  # noqa: PLC0415

    return Compiler.for_settings(settings, StepTypes())


def open_store(settings: Settings) -> SqlStore:
    """The settings' store, migrated (SQLite) or checked to be current (others).

    Runs whose ``conveyor run`` process died are failed as lost first, so that what
    ``runs``, ``show`` and ``logs`` print is true (``engine.opening.recover_abandoned``).
    Both come from ``engine.opening``, which loads the store but not the rest of the engine.
    """
    from conveyor.orchestrator.engine import open_store, recover_abandoned  # noqa: PLC0415

    store = open_store(settings)
    with contextlib.suppress(ConveyorError):  # reading must work even when this cannot
        recover_abandoned(store, settings.data_dir, partial(_clean_up, settings))
    return store


def _clean_up(settings: Settings, run_id: str) -> None:
    """Remove an abandoned run's workspace: the sandbox plugins load only when one is found."""
    from conveyor.orchestrator.plugins import Sandboxes  # noqa: PLC0415  (see above)

    Sandboxes(settings).get("local").cleanup_run(run_id)


def bare_store(settings: Settings) -> SqlStore:
    """The settings' store as it is, for ``db upgrade``."""
    from conveyor.orchestrator.store import SqlStore  # noqa: PLC0415  (see above)

    return SqlStore(settings.resolved_database_url)


def engine(settings: Settings, compiler: Compiler | None = None) -> EmbeddedEngine:
    """An embedded engine: store, runtime, executor and a thread pool.

    ``compiler``: the one this process compiled the pipeline with, so it has one.
    """
    from conveyor.orchestrator.engine import EmbeddedEngine  # noqa: PLC0415  (see above)

    return EmbeddedEngine(settings, compiler=compiler)
