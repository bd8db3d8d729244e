"""Runs' secrets, sealed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create run_secrets."""
    op.create_table(
        "run_secrets",
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", name="pk_run_secrets"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_run_secrets_instance_id_workflow_instances",
        ),
    )


def downgrade() -> None:
    """Drop run_secrets."""
    op.drop_table("run_secrets")
