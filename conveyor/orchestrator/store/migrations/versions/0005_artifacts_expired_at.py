"""When a run's artifacts expired, on the run, with an index of the runs that keep theirs.

A retention sweep then reads only runs that still have artifacts, instead of walking
past every run whose artifacts went long ago. Filled in from the runs' events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEPT = sa.text("artifacts_expired_at IS NULL")


def upgrade() -> None:
    """Add workflow_instances.artifacts_expired_at, fill it in, index the runs without it."""
    with op.batch_alter_table("workflow_instances") as table:
        table.add_column(sa.Column("artifacts_expired_at", UTCDateTime))
    op.execute(
        "UPDATE workflow_instances SET artifacts_expired_at = ("
        " SELECT MAX(e.created_at) FROM workflow_events e"
        " WHERE e.instance_id = workflow_instances.id AND e.type = 'artifacts.expired'"
        " AND e.created_at >= workflow_instances.completed_at)"
    )
    op.create_index(
        "ix_workflow_instances_artifacts_kept",
        "workflow_instances",
        ["completed_at"],
        postgresql_where=_KEPT,
        sqlite_where=_KEPT,
    )


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_workflow_instances_artifacts_kept", table_name="workflow_instances")
    with op.batch_alter_table("workflow_instances") as table:
        table.drop_column("artifacts_expired_at")
