"""Per-run step counts on the run's row, and steps indexed by status, then run.

``workflow_instances.step_counts`` says how many of the run's steps are in each status;
the run transaction keeps it as it moves steps, so whether a run is over needs no read
of its steps. Filled in here from the steps there are. ``ix_workflow_steps_status_run``
(status, run, queue, plan order) replaces the status-only index: the reconciler still
reads steps by status, and a claim reads a run's next few queued steps on a queue in
plan order without reading the rest of the run, or any other run's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.orchestrator.store.schema import JSONType

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STEPS = "workflow_steps"
STATUS_INDEX = "ix_workflow_steps_status"
STATUS_RUN_INDEX = "ix_workflow_steps_status_run"

#: Every run's counts in one statement, on each database's JSON aggregate.
_FILL = {
    "postgresql": (
        "UPDATE workflow_instances AS r SET step_counts = c.counts"
        " FROM (SELECT instance_id, jsonb_object_agg(status, n) AS counts"
        "       FROM (SELECT instance_id, status, count(*) AS n FROM workflow_steps"
        "             GROUP BY instance_id, status) AS g"
        "       GROUP BY instance_id) AS c"
        " WHERE c.instance_id = r.id"
    ),
    "sqlite": (
        "UPDATE workflow_instances SET step_counts = ("
        " SELECT json_group_object(status, n) FROM ("
        "  SELECT status, count(*) AS n FROM workflow_steps"
        "  WHERE instance_id = workflow_instances.id GROUP BY status))"
    ),
}


def upgrade() -> None:
    """Add and fill workflow_instances.step_counts; index steps by status and run."""
    with op.batch_alter_table("workflow_instances") as table:
        table.add_column(sa.Column("step_counts", JSONType))
    op.execute(_FILL[op.get_bind().dialect.name])
    # A run without steps (none are made so, but older data may hold one) counts none.
    op.execute("UPDATE workflow_instances SET step_counts = '{}' WHERE step_counts IS NULL")
    op.create_index(STATUS_RUN_INDEX, STEPS, ["status", "instance_id", "queue", "position"])
    op.drop_index(STATUS_INDEX, table_name=STEPS)


def downgrade() -> None:
    """Revision 0006's tables again."""
    op.create_index(STATUS_INDEX, STEPS, ["status"])
    op.drop_index(STATUS_RUN_INDEX, table_name=STEPS)
    with op.batch_alter_table("workflow_instances") as table:
        table.drop_column("step_counts")
