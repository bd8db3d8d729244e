"""Workspaces handed between hosts: each run's newest manifest, and the live hosts.

``workflow_instances.workspace_head`` is the SHA-256 of the run's newest workspace
manifest in the artifact store and ``workspace_host`` the host that published it
(both NULL until a step publishes one, and again once the run's workspace is removed);
a partial index finds the runs that still keep one. ``worker_hosts`` lists each worker
host and the queues it consumes, with when it last said so.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

RUNS = "workflow_instances"
KEPT_INDEX = "ix_workflow_instances_workspace_kept"


def upgrade() -> None:
    """Add the runs' workspace head and host, and the worker hosts' table."""
    with op.batch_alter_table(RUNS) as table:
        table.add_column(sa.Column("workspace_head", sa.String(64)))
        table.add_column(sa.Column("workspace_host", sa.String(64)))
    kept = sa.text("workspace_head IS NOT NULL")
    op.create_index(KEPT_INDEX, RUNS, ["status"], postgresql_where=kept, sqlite_where=kept)
    op.create_table(
        "worker_hosts",
        sa.Column("host", sa.String(64), primary_key=True),
        sa.Column("queue", sa.String(50), primary_key=True),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop them again."""
    op.drop_table("worker_hosts")
    op.drop_index(KEPT_INDEX, table_name=RUNS)
    with op.batch_alter_table(RUNS) as table:
        table.drop_column("workspace_host")
        table.drop_column("workspace_head")
