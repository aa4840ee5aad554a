"""record number counter

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

SQLite gives an ``INTEGER PRIMARY KEY`` row the highest number plus one, so deleting the
newest records handed their numbers (and so their record ids) to the next ones. The counter
keeps the highest number ever given; PostgreSQL's sequence already never goes back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_counter",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute(
        "INSERT INTO data_counter (name, value) "
        "SELECT 'record', coalesce(max(seq), 0) FROM data_record"
    )


def downgrade() -> None:
    op.drop_table("data_counter")
