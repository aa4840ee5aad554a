"""initial data store

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
        "data_checkpoint",
        sa.Column("lineage_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lineage_id", "position"),
    )
    op.create_table(
        "data_file",
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("ext", sa.String(length=20), nullable=False),
        sa.Column("mimetype", sa.String(length=200), nullable=False),
        sa.Column("encoding", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("bytes_received", sa.BigInteger(), nullable=False),
        sa.Column("space_id", sa.String(length=60), nullable=True),
        sa.Column("environment_id", sa.String(length=60), nullable=True),
        sa.Column("workbook_id", sa.String(length=40), nullable=True),
        sa.Column("sheet_id", sa.String(length=40), nullable=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("storage_key", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_file", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_file_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "data_record",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("sheet_id", sa.String(length=40), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
    )
    with op.batch_alter_table("data_record", schema=None) as batch_op:
        batch_op.create_index("ix_data_record_sheet_seq", ["sheet_id", "seq"], unique=False)

    op.create_table(
        "data_sheet",
        sa.Column("workbook_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_sheet", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_sheet_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_data_sheet_workbook_id"), ["workbook_id"], unique=False
        )

    op.create_table(
        "data_workbook",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("space_id", sa.String(length=60), nullable=True),
        sa.Column("environment_id", sa.String(length=60), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_workbook", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_data_workbook_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("data_workbook", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_workbook_organization_id"))

    op.drop_table("data_workbook")
    with op.batch_alter_table("data_sheet", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_sheet_workbook_id"))
        batch_op.drop_index(batch_op.f("ix_data_sheet_organization_id"))

    op.drop_table("data_sheet")
    with op.batch_alter_table("data_record", schema=None) as batch_op:
        batch_op.drop_index("ix_data_record_sheet_seq")

    op.drop_table("data_record")
    with op.batch_alter_table("data_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_file_organization_id"))

    op.drop_table("data_file")
    op.drop_table("data_checkpoint")
