"""Alembic environment: runs on the connection handed over by `jobs_plugin.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import jobs_plugin.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")

if connection is None:  # `alembic revision --autogenerate` from a developer's shell
    import sqlalchemy as sa

    from jobs_plugin.settings import get_settings

    connection = sa.create_engine(get_settings().resolved_database_url).connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table="prefect_jobs_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
