"""job schedules, overlap rules, deployment-isolated workflows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: no batch table copy (SQLite's foreign keys would refuse it).
    op.add_column(
        "job", sa.Column("max_concurrent_runs", sa.Integer(), nullable=True, server_default="1")
    )
    op.add_column(
        "job",
        sa.Column("overlap", sa.String(length=20), nullable=False, server_default="skip"),
    )
    op.add_column("workflow", sa.Column("deployment", sa.String(length=300), nullable=True))
    op.create_table(
        "job_schedule",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("job_id", sa.String(length=40), sa.ForeignKey("job.id"), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("interval_seconds", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_schedule_job_id", "job_schedule", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_schedule_job_id", table_name="job_schedule")
    op.drop_table("job_schedule")
    with op.batch_alter_table("workflow", schema=None) as batch_op:
        batch_op.drop_column("deployment")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("overlap")
        batch_op.drop_column("max_concurrent_runs")
