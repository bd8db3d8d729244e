"""What a run transaction writes besides its moves: the Postgres statement that writes
its events, the run's ``event_seq`` and step counts, and the changes behind
``/metrics`` in one round trip; and the step counts as the run's row stores them.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.status import StepStatus
from conveyor.orchestrator.store.schema import events, metric_changes, runs

#: Columns of ``workflow_events`` and ``metric_changes`` as the statement binds them.
EVENT_COLUMNS = ("instance_id", "step_key", "type", "payload", "created_at", "seq")
CHANGE_COLUMNS = ("kind", "status", "type", "queue", "le", "n", "seconds")


@functools.cache
def flush_statement(count: int, changes: int, counts: bool) -> sa.TextClause:
    """Postgres: a transaction's bookkeeping in one statement. It inserts ``count``
    events and bumps the run's event_seq (writing its step counts too, with
    ``counts``); with ``changes``, it inserts that many rows of ``metric_changes`` and
    answers their first and last ids.

    Data-modifying CTEs save a round trip each on every transaction. Written as text,
    one statement per shape, built once: a multi-row ``insert().values()`` would be
    compiled again on every call, which costs more than the round trip it saves.
    """
    # Only names from the schema and numbered placeholders: nothing from outside.
    sets = "event_seq = :b_seq, updated_at = :b_now" + (
        ", step_counts = :b_counts" if counts else ""
    )
    bump = f"UPDATE {runs.name} SET {sets} WHERE id = :b_run"  # noqa: S608
    insert = _values_insert(events, EVENT_COLUMNS, "", count)
    types = {"b_now": runs.c.updated_at.type}
    if counts:
        types["b_counts"] = runs.c.step_counts.type
    for i in range(count):
        types |= {f"{name}_{i}": events.c[name].type for name in EVENT_COLUMNS}
    if changes:
        changed = _values_insert(metric_changes, CHANGE_COLUMNS, "m_", changes)
        ctes = [f"bump_seq AS ({bump})", f"new_events AS ({insert})"]
        ctes.append(f"changed AS ({changed} RETURNING id)")
        sql = "WITH " + ", ".join(ctes) + " SELECT min(id), max(id) FROM changed"  # noqa: S608
        for i in range(changes):
            types |= {f"m_{name}_{i}": metric_changes.c[name].type for name in CHANGE_COLUMNS}
    else:
        sql = f"WITH bump_seq AS ({bump}) {insert}"
    return sa.text(sql).bindparams(*(sa.bindparam(k, type_=t) for k, t in types.items()))


def _values_insert(table: sa.Table, columns: Sequence[str], prefix: str, count: int) -> str:
    """``INSERT INTO table (columns) VALUES`` ``count`` rows of numbered placeholders."""
    rows = ", ".join(
        "(" + ", ".join(f":{prefix}{name}_{i}" for name in columns) + ")" for i in range(count)
    )
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {rows}"  # noqa: S608


def counts_from(stored: Any) -> Counter[StepStatus] | None:
    """The run row's ``step_counts`` as a Counter; None when the row keeps none yet."""
    if stored is None:
        return None
    return Counter({StepStatus(status): int(n) for status, n in stored.items()})


def counts_json(counts: Counter[StepStatus] | None) -> dict[str, int] | None:
    """``step_counts`` as stored: the statuses some step is in (None: count again)."""
    if counts is None:
        return None
    return {status.value: n for status, n in sorted(counts.items()) if n > 0}
