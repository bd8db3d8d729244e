"""The execution log: definitions, runs, steps, events and step logs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("definition", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_definitions"),
        sa.UniqueConstraint("name", "version", name="uq_workflow_definitions_name_version"),
    )
    op.create_table(
        "workflow_instances",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("definition_id", sa.String(36), nullable=False),
        sa.Column("pipeline", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("plan", JSONType, nullable=False),
        sa.Column("submitted_by", sa.String(200)),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("event_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("deadline", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_instances"),
        sa.ForeignKeyConstraint(
            ["definition_id"],
            ["workflow_definitions.id"],
            name="fk_workflow_instances_definition_id_workflow_definitions",
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_workflow_instances_idempotency_key"),
    )
    op.create_index("ix_workflow_instances_status", "workflow_instances", ["status"])
    op.create_index(
        "ix_workflow_instances_pipeline_created", "workflow_instances", ["pipeline", "created_at"]
    )
    op.create_table(
        "workflow_steps",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_workflow_steps"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_workflow_steps_instance_id_workflow_instances",
        ),
        sa.UniqueConstraint(
            "instance_id", "step_key", name="uq_workflow_steps_instance_id_step_key"
        ),
    )
    op.create_index("ix_workflow_steps_status", "workflow_steps", ["status"])
    op.create_table(
        "workflow_events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("step_key", sa.String(200)),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("payload", JSONType),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_events"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_workflow_events_instance_id_workflow_instances",
        ),
        sa.UniqueConstraint("instance_id", "seq", name="uq_workflow_events_instance_id_seq"),
    )
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


def downgrade() -> None:
    """Drop the tables."""
    for table in (
        "step_logs",
        "workflow_events",
        "workflow_steps",
        "workflow_instances",
        "workflow_definitions",
    ):
        op.drop_table(table)
