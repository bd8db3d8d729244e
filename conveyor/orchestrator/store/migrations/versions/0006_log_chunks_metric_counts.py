"""Step logs in chunks instead of a row per line; the counts behind /metrics as data.

``step_logs`` (one row per line) becomes ``step_log_chunks``: up to 64 KiB of one
attempt's lines per row, numbered in the attempt. Existing lines are moved over as
they are (nothing is cut). ``metric_counts`` is filled from the runs and steps there
are, so a scrape no longer reads those tables at all; ``metric_changes`` holds what
transitions change between two scrapes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: As ``logchunks.py`` packs them when this migration was written.
CHUNK_BYTES = 64 * 1024
CHUNK_LINES = 4096
#: Chunks (or lines) written per statement while moving logs.
BATCH = 500
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)

_meta = sa.MetaData()
old_logs = sa.Table(
    "step_logs",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_id", sa.String(36)),
    sa.Column("step_key", sa.String(200)),
    sa.Column("attempt", sa.Integer),
    sa.Column("stream", sa.String(10)),
    sa.Column("text", sa.Text),
    sa.Column("created_at", UTCDateTime),
)
chunks = sa.Table(
    "step_log_chunks",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_id", sa.String(36)),
    sa.Column("step_key", sa.String(200)),
    sa.Column("attempt", sa.Integer),
    sa.Column("first_line", sa.Integer),
    sa.Column("last_line", sa.Integer),
    sa.Column("bytes", sa.Integer),
    sa.Column("total_bytes", sa.BigInteger),
    sa.Column("dropped_bytes", sa.BigInteger),
    sa.Column("lines", sa.Text),
    sa.Column("created_at", UTCDateTime),
)


def _metric_key() -> list[sa.Column[Any]]:
    return [
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=""),
        sa.Column("type", sa.String(100), nullable=False, server_default=""),
        sa.Column("queue", sa.String(50), nullable=False, server_default=""),
        sa.Column("le", sa.String(20), nullable=False, server_default=""),
    ]


def upgrade() -> None:
    """Create the new tables, move the logs into chunks, count what there is."""
    op.create_table(
        "step_log_chunks",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("first_line", sa.Integer, nullable=False),
        sa.Column("last_line", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("dropped_bytes", sa.BigInteger),
        sa.Column("lines", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_step_log_chunks"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_step_log_chunks_instance_id_workflow_instances",
        ),
    )
    op.create_index(
        "ix_step_log_chunks_instance_id_step_key_id",
        "step_log_chunks",
        ["instance_id", "step_key", "id"],
    )
    op.create_index(
        "ix_step_log_chunks_instance_id_step_key_attempt_id",
        "step_log_chunks",
        ["instance_id", "step_key", "attempt", "id"],
    )
    _move_logs_into_chunks(op.get_bind())
    op.drop_index("ix_step_logs_instance_id_step_key_id", table_name="step_logs")
    op.drop_table("step_logs")

    op.create_table(
        "metric_counts",
        *_metric_key(),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("kind", "status", "type", "queue", "le", name="pk_metric_counts"),
    )
    op.create_table(
        "metric_changes",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        *_metric_key(),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_metric_changes"),
    )
    _count_what_there_is(op.get_bind())


def downgrade() -> None:
    """Back to a row per line (a cap's marker becomes a line), without the counts."""
    op.drop_table("metric_changes")
    op.drop_table("metric_counts")
    op.create_table(
        "step_logs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("stream", sa.String(10), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_step_logs"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_step_logs_instance_id_workflow_instances",
        ),
    )
    op.create_index(
        "ix_step_logs_instance_id_step_key_id", "step_logs", ["instance_id", "step_key", "id"]
    )
    _move_chunks_into_lines(op.get_bind())
    op.drop_table("step_log_chunks")


# -- moving the logs ----------------------------------------------------------------------


def _move_logs_into_chunks(conn: sa.Connection) -> None:
    """Pack every attempt's lines, in the order they were written, into chunks."""
    # Read as a stream (a server-side cursor on Postgres): millions of lines fit nowhere.
    query = (
        sa.select(old_logs)
        .order_by(old_logs.c.instance_id, old_logs.c.step_key, old_logs.c.attempt, old_logs.c.id)
        .execution_options(stream_results=True, yield_per=2000)
    )
    pending: list[dict[str, Any]] = []
    for row in _chunked(conn, query):
        pending.append(row)
        if len(pending) >= BATCH:
            conn.execute(chunks.insert(), pending)
            pending = []
    if pending:
        conn.execute(chunks.insert(), pending)


def _chunked(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[dict[str, Any]]:
    """Rows of step_log_chunks for the lines ``query`` reads, one attempt after another."""
    attempt: tuple[str, str, int] | None = None
    lines: list[Any] = []
    stream: str | None = None
    number = total = size = 0
    first = last = None

    def chunk() -> dict[str, Any]:
        assert attempt is not None
        run_id, key, tried = attempt
        return {
            "instance_id": run_id,
            "step_key": key,
            "attempt": tried,
            "first_line": number - len(lines) + 1,
            "last_line": number,
            "bytes": size,
            "total_bytes": total,
            "dropped_bytes": None,
            "lines": json.dumps(lines, separators=(",", ":")),
            "created_at": last or first,
        }

    for row in conn.execute(query):
        this = (row.instance_id, row.step_key, row.attempt)
        weight = len(row.text.encode("utf-8", "surrogatepass")) + 1
        if this != attempt:
            if lines:
                yield chunk()
            attempt, lines, stream, number, total, size = this, [], None, 0, 0, 0
            first = row.created_at
        elif lines and (size + weight > CHUNK_BYTES or len(lines) >= CHUNK_LINES):
            yield chunk()
            lines, stream, size, first = [], None, 0, row.created_at
        lines.append(row.text if row.stream == stream else [row.stream, row.text])
        stream = row.stream
        number += 1
        size += weight
        total += weight
        last = row.created_at
    if lines:
        yield chunk()


def _move_chunks_into_lines(conn: sa.Connection) -> None:
    pending: list[dict[str, Any]] = []
    query = sa.select(chunks).order_by(chunks.c.id)
    for row in conn.execute(query.execution_options(stream_results=True, yield_per=200)):
        base = {
            "instance_id": row.instance_id,
            "step_key": row.step_key,
            "attempt": row.attempt,
            "created_at": row.created_at,
        }
        if row.dropped_bytes is not None:
            dropped = row.last_line - row.first_line + 1
            text = f"[conveyor] log cut: {dropped} lines ({row.dropped_bytes} bytes) dropped"
            pending.append({**base, "stream": "system", "text": text})
        stream = ""
        for item in json.loads(row.lines):
            if isinstance(item, str):
                text = item
            else:
                stream, text = item
            pending.append({**base, "stream": stream, "text": text})
        if len(pending) >= BATCH:
            conn.execute(old_logs.insert(), pending)
            pending = []
    if pending:
        conn.execute(old_logs.insert(), pending)


# -- counting what there is ---------------------------------------------------------------


def _count_what_there_is(conn: sa.Connection) -> None:
    """The counts of ``metric_counts`` as they stand, from the runs and steps."""
    conn.execute(
        sa.text(
            "INSERT INTO metric_counts (kind, status, type, queue, le, n, seconds)"
            " SELECT 'run', status, '', '', '', COUNT(*), 0"
            " FROM workflow_instances GROUP BY status"
        )
    )
    conn.execute(
        sa.text(
            "INSERT INTO metric_counts (kind, status, type, queue, le, n, seconds)"
            " SELECT 'step', status, type, queue, '', COUNT(*), 0"
            " FROM workflow_steps GROUP BY status, type, queue"
        )
    )
    if conn.dialect.name == "sqlite":
        seconds = "((julianday(completed_at) - julianday(started_at)) * 86400.0)"
    else:
        seconds = "EXTRACT(EPOCH FROM (completed_at - started_at))"
    # The bucket a duration falls in, named as the code names it: str(float(bound)).
    whens = " ".join(f"WHEN {seconds} <= {b} THEN '{float(b)}'" for b in DURATION_BUCKETS)
    bucket = f"CASE {whens} ELSE '+Inf' END"
    conn.execute(
        sa.text(
            "INSERT INTO metric_counts (kind, status, type, queue, le, n, seconds)"  # noqa: S608
            f" SELECT 'duration', '', type, queue, le, COUNT(*), SUM(s) FROM ("
            f" SELECT type, queue, {bucket} AS le, {seconds} AS s FROM workflow_steps"
            " WHERE status IN ('succeeded', 'failed') AND started_at IS NOT NULL"
            " AND completed_at >= started_at) AS ended GROUP BY type, queue, le"
        )
    )
