"""What the artifact retention sweep reads: finished runs that still have their artifacts.

Which retention applies to which run is ``artifacts.retention``'s to decide; it asks for
the runs of some definition versions (or of all but some) that ended before a cutoff.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa

from conveyor.orchestrator.status import RunStatus
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import runs

FINISHED = tuple(s.value for s in RunStatus if s.terminal)


def expirable_runs(
    store: Connector,
    cutoff: datetime,
    *,
    limit: int,
    only: Collection[str] | None = None,
    besides: Collection[str] = (),
) -> list[str]:
    """Finished runs that ended before ``cutoff`` and still have their artifacts.

    Oldest first. ``only`` keeps the runs of these definition versions (None: of any),
    ``besides`` leaves out the runs of those.
    """
    query = (
        sa.select(runs.c.id)
        .where(
            runs.c.status.in_(FINISHED),
            runs.c.completed_at < cutoff,
            runs.c.artifacts_expired_at.is_(None),
        )
        .order_by(runs.c.completed_at)
        .limit(limit)
    )
    if only is not None:
        query = query.where(runs.c.definition_id.in_(list(only)))
    if besides:
        query = query.where(runs.c.definition_id.not_in(list(besides)))
    return [row["id"] for row in store.rows(query)]
