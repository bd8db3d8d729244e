"""Indexes for reads that must not grow with the history.

The runs listing is ordered by (created_at, id), newest first, and filtered by status,
pipeline or both: each shape gets an index it can walk from the newest end and stop
after a page, instead of sorting every run there is. The single-column status index
and the (pipeline, created_at) one are the leading parts of the new ones, so they go.
A run looked up by a prefix of its id gets a pattern index on Postgres, where a
collation other than "C" keeps ``LIKE 'abc%'`` from using the primary key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

RUNS = "workflow_instances"
#: name -> columns of the indexes this revision adds to the runs table.
ADDED = {
    "ix_workflow_instances_created_at_id": ["created_at", "id"],
    "ix_workflow_instances_status_created_at_id": ["status", "created_at", "id"],
    "ix_workflow_instances_pipeline_created_at_id": ["pipeline", "created_at", "id"],
    "ix_workflow_instances_pipeline_status_created_at_id": [
        "pipeline",
        "status",
        "created_at",
        "id",
    ],
}
#: name -> columns of the indexes the new ones replace.
REPLACED = {
    "ix_workflow_instances_status": ["status"],
    "ix_workflow_instances_pipeline_created": ["pipeline", "created_at"],
}
PREFIX = "ix_workflow_instances_id_prefix"


def upgrade() -> None:
    """Add the listing and prefix indexes, drop the ones they cover."""
    for name, columns in ADDED.items():
        op.create_index(name, RUNS, columns)
    op.create_index(PREFIX, RUNS, ["id"], postgresql_ops={"id": "varchar_pattern_ops"})
    for name in REPLACED:
        op.drop_index(name, table_name=RUNS)


def downgrade() -> None:
    """The indexes of revision 0007 again."""
    for name, columns in REPLACED.items():
        op.create_index(name, RUNS, columns)
    op.drop_index(PREFIX, table_name=RUNS)
    for name in ADDED:
        op.drop_index(name, table_name=RUNS)
