"""Tables of the execution log (SQLAlchemy Core), the same on SQLite and Postgres.

Alembic migrations under ``migrations/`` create them; this module is what the code
queries. Keep the two in step: a test compares them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from conveyor.orchestrator import values

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite drops tz)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONValue(sa.TypeDecorator[Any]):
    """JSON (``jsonb`` on Postgres) that refuses, before writing, what could not be read.

    Every JSON value the store writes passes ``values.check``: no NUL, lone surrogate,
    NaN, integer past 64 bits or nesting past ``STORED_DEPTH`` reaches a row, whatever
    path it came by (UnstorableValue, a 400 over the API).
    """

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else sa.JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None:
            values.check(value, "value")
        return value


JSONType = JSONValue()

definitions = sa.Table(
    "workflow_definitions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("definition", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("name", "version"),
)

runs = sa.Table(
    "workflow_instances",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("definition_id", sa.String(36), sa.ForeignKey(definitions.c.id), nullable=False),
    sa.Column("pipeline", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("plan", JSONType, nullable=False),
    sa.Column("submitted_by", sa.String(200)),
    sa.Column("idempotency_key", sa.String(200), unique=True),
    sa.Column("error", sa.Text),
    sa.Column("event_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deadline", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime),
    #: When retention deleted the run's artifacts since it last ended (a retry clears it).
    sa.Column("artifacts_expired_at", UTCDateTime),
    #: How many of the run's steps are in each status ({"pending": 3, ...}), kept by the
    #: run transaction's moves: whether the run is over needs no read of its steps.
    #: NULL: not counted yet (the next transaction that needs it counts once).
    sa.Column("step_counts", JSONType),
    #: The run's newest workspace manifest (its SHA-256) in the artifact store, and the
    #: host that published it; NULL until a step publishes one and once the run's
    #: workspace is removed (``store/workspaces.py``).
    sa.Column("workspace_head", sa.String(64)),
    sa.Column("workspace_host", sa.String(64)),
    # The runs listing, newest first, by each filter it takes: a page reads a page of
    # index whatever the history (``SqlStore.list_runs``). Status first also serves the
    # reconciler's reads of the runs still going.
    sa.Index("ix_workflow_instances_created_at_id", "created_at", "id"),
    sa.Index("ix_workflow_instances_status_created_at_id", "status", "created_at", "id"),
    sa.Index("ix_workflow_instances_pipeline_created_at_id", "pipeline", "created_at", "id"),
    sa.Index(
        "ix_workflow_instances_pipeline_status_created_at_id",
        "pipeline",
        "status",
        "created_at",
        "id",
    ),
    #: A run by a prefix of its id (``LIKE 'abc%'``), whatever the database's collation.
    sa.Index("ix_workflow_instances_id_prefix", "id", postgresql_ops={"id": "varchar_pattern_ops"}),
)
#: Runs that still have their artifacts, oldest end first: what a retention sweep reads,
#: however many runs before them already lost theirs.
sa.Index(
    "ix_workflow_instances_artifacts_kept",
    runs.c.completed_at,
    postgresql_where=runs.c.artifacts_expired_at.is_(None),
    sqlite_where=runs.c.artifacts_expired_at.is_(None),
)

#: Runs whose workspace is still kept: few at any time (it goes when the run ends), so
#: the sweep that removes what a run's end left reads only them.
sa.Index(
    "ix_workflow_instances_workspace_kept",
    runs.c.status,
    postgresql_where=runs.c.workspace_head.isnot(None),
    sqlite_where=runs.c.workspace_head.isnot(None),
)

#: The worker hosts alive and the queues each consumes: where a run's next step is sent
#: to find the workspace it needs already there (``store/workspaces.py``).
worker_hosts = sa.Table(
    "worker_hosts",
    metadata,
    sa.Column("host", sa.String(64), primary_key=True),
    sa.Column("queue", sa.String(50), primary_key=True),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)

#: Every column of a run but its plan, which is large and read once per process.
RUN_COLUMNS = tuple(c for c in runs.c if c.name != "plan")

steps = sa.Table(
    "workflow_steps",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), nullable=False),
    sa.Column("step_key", sa.String(200), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("queue", sa.String(50), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("exit_code", sa.Integer),
    sa.Column("outputs", JSONType),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("available_at", UTCDateTime),
    sa.Column("started_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.UniqueConstraint("instance_id", "step_key"),
)
#: Steps by status, then run, queue and plan order. The reconciler reads every run's
#: queued or running steps by its first column; a claim reads one run's next few queued
#: steps on a queue (``queued_now``) as a range of it, in order, and stops at the limit.
#: One index for both: a planner that thinks a status rare (statistics taken while no
#: step was queued) cannot then pick a status-only index and read every queued step of
#: every run.
sa.Index(
    "ix_workflow_steps_status_run",
    steps.c.status,
    steps.c.instance_id,
    steps.c.queue,
    steps.c.position,
)

#: What an advance needs of every step; the rest (outputs above all) is read when needed.
STEP_STATE_COLUMNS = tuple(
    steps.c[name]
    for name in (
        "id",
        "instance_id",
        "step_key",
        "position",
        "type",
        "status",
        "attempts",
        "queue",
        "last_error",
    )
)

events = sa.Table(
    "workflow_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("step_key", sa.String(200)),
    sa.Column("type", sa.String(50), nullable=False),
    sa.Column("payload", JSONType),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("instance_id", "seq"),
)

#: A step's log, many lines per row (``logchunks.py``): up to 64 KiB of one attempt's
#: lines each, numbered ``first_line``..``last_line`` in the attempt's output. A row with
#: ``dropped_bytes`` is the marker of what the cap dropped (lines, then, is empty).
step_log_chunks = sa.Table(
    "step_log_chunks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), nullable=False),
    sa.Column("step_key", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("first_line", sa.Integer, nullable=False),
    sa.Column("last_line", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    #: Bytes the attempt kept up to and including this chunk: what the cap compares.
    sa.Column("total_bytes", sa.BigInteger, nullable=False),
    sa.Column("dropped_bytes", sa.BigInteger),
    sa.Column("lines", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_step_log_chunks_instance_id_step_key_id", "instance_id", "step_key", "id"),
    sa.Index(
        "ix_step_log_chunks_instance_id_step_key_attempt_id",
        "instance_id",
        "step_key",
        "attempt",
        "id",
    ),
)

#: The key of a metric's count: what it counts (``run``, ``step``, ``duration``), and
#: its labels; ``le`` is the bucket a duration fell in ("" for the others).
_METRIC_KEY = ("kind", "status", "type", "queue", "le")


def _metric_key() -> list[sa.Column[str]]:
    return [
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default=""),
        sa.Column("type", sa.String(100), nullable=False, server_default=""),
        sa.Column("queue", sa.String(50), nullable=False, server_default=""),
        sa.Column("le", sa.String(20), nullable=False, server_default=""),
    ]


#: Counts behind ``/metrics`` (runs and steps by status, step durations), so a scrape
#: reads a few rows however long the history. Transitions never update these rows (that
#: would make every transaction of every run wait on the same row): they insert their
#: changes into ``metric_changes``, which a scrape folds in here.
metric_counts = sa.Table(
    "metric_counts",
    metadata,
    *_metric_key(),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint(*_METRIC_KEY),
)

#: Changes to ``metric_counts`` written by transitions in their own transaction.
metric_changes = sa.Table(
    "metric_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    *_metric_key(),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

run_secrets = sa.Table(
    "run_secrets",
    metadata,
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: One row per scan step of a run: the summary, and the branch a baseline is matched on.
scan_reports = sa.Table(
    "scan_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), nullable=False),
    sa.Column("step_key", sa.String(200), nullable=False),
    sa.Column("scanner", sa.String(50), nullable=False),
    sa.Column("branch", sa.String(200)),
    sa.Column("summary", JSONType, nullable=False),
    sa.Column("passed_gate", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("instance_id", "step_key"),
    sa.Index("ix_scan_reports_branch", "branch"),
)

#: Every finding of every scan step, with the fingerprint ``fail_on: new`` compares.
findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance_id", sa.String(36), sa.ForeignKey(runs.c.id), nullable=False),
    sa.Column("step_key", sa.String(200), nullable=False),
    sa.Column("scanner", sa.String(50), nullable=False),
    sa.Column("rule_id", sa.String(300), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),
    sa.Column("native_severity", sa.String(50), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("line", sa.Integer),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("is_new", sa.Boolean),
    sa.Column("suppressed", sa.Text),
    sa.Column("package", sa.String(300)),
    sa.Column("version", sa.String(200)),
    sa.Column("fixed_version", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_findings_instance_id_step_key", "instance_id", "step_key"),
    sa.Index("ix_findings_instance_id_fingerprint", "instance_id", "fingerprint"),
)
