"""initial catalog

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "organization",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_organization_name"), ["name"], unique=True)

    op.create_table(
        "event",
        sa.Column("topic", sa.String(length=60), nullable=False),
        sa.Column("domain", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("context", sa.JSON(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("cursor"),
        sa.UniqueConstraint("job_id", "run_id", "sequence"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_event_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_event_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_event_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_topic"), ["topic"], unique=False)

    op.create_table(
        "job",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source_provider", sa.String(length=200), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=True),
        sa.Column("operation", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("destination", sa.String(length=200), nullable=True),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("job_config_json", sa.JSON(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("last_run_id", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_job_status"), ["status"], unique=False)

    op.create_table(
        "workflow",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("entrypoint", sa.String(length=500), nullable=False),
        sa.Column("isolation", sa.String(length=20), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_delay_seconds", sa.Float(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=True),
        sa.Column("parameter_schema", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workflow", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "job_run",
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("info", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("job_version", sa.Integer(), nullable=False),
        sa.Column("start_position", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("retry_of", sa.String(length=40), nullable=True),
        sa.Column("prefect_flow_run_id", sa.String(length=40), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_run_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_job_run_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_job_run_prefect_flow_run_id"), ["prefect_flow_run_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_job_run_status"), ["status"], unique=False)

    op.create_table(
        "job_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "version"),
    )
    with op.batch_alter_table("job_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_version_job_id"), ["job_id"], unique=False)

    op.create_table(
        "workflow_run",
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("isolation", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("prefect_flow_run_id", sa.String(length=40), nullable=True),
        sa.Column("reused_from", sa.String(length=40), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["job_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "position"),
    )
    with op.batch_alter_table("workflow_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflow_run_run_id"), ["run_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("workflow_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_run_run_id"))

    op.drop_table("workflow_run")
    with op.batch_alter_table("job_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_version_job_id"))

    op.drop_table("job_version")
    with op.batch_alter_table("job_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_run_status"))
        batch_op.drop_index(batch_op.f("ix_job_run_prefect_flow_run_id"))
        batch_op.drop_index(batch_op.f("ix_job_run_organization_id"))
        batch_op.drop_index(batch_op.f("ix_job_run_job_id"))

    op.drop_table("job_run")
    with op.batch_alter_table("workflow", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_organization_id"))

    op.drop_table("workflow")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_status"))
        batch_op.drop_index(batch_op.f("ix_job_organization_id"))

    op.drop_table("job")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_topic"))
        batch_op.drop_index(batch_op.f("ix_event_run_id"))
        batch_op.drop_index(batch_op.f("ix_event_organization_id"))
        batch_op.drop_index(batch_op.f("ix_event_job_id"))
        batch_op.drop_index(batch_op.f("ix_event_id"))
        batch_op.drop_index(batch_op.f("ix_event_created_at"))

    op.drop_table("event")
    with op.batch_alter_table("organization", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_organization_name"))

    op.drop_table("organization")
