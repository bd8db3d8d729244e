"""Security scan reports and their findings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import JSONType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create scan_reports and findings."""
    op.create_table(
        "scan_reports",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("step_key", sa.String(200), nullable=False),
        sa.Column("scanner", sa.String(50), nullable=False),
        sa.Column("branch", sa.String(200)),
        sa.Column("summary", JSONType, nullable=False),
        sa.Column("passed_gate", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scan_reports"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_scan_reports_instance_id_workflow_instances",
        ),
        sa.UniqueConstraint("instance_id", "step_key", name="uq_scan_reports_instance_id_step_key"),
    )
    op.create_index("ix_scan_reports_branch", "scan_reports", ["branch"])
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instances.id"],
            name="fk_findings_instance_id_workflow_instances",
        ),
    )
    op.create_index("ix_findings_instance_id_step_key", "findings", ["instance_id", "step_key"])
    op.create_index(
        "ix_findings_instance_id_fingerprint", "findings", ["instance_id", "fingerprint"]
    )


def downgrade() -> None:
    """Drop findings and scan_reports."""
    op.drop_table("findings")
    op.drop_table("scan_reports")
