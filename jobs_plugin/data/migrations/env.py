"""Alembic environment of the data store: runs on the connection `jobs_plugin.data.store`
hands over, with its own version table (the data store may share a database with the catalog).
"""

from __future__ import annotations

from alembic import context

from jobs_plugin.data.models import DataModel

VERSION_TABLE = "prefect_jobs_data_alembic_version"
target_metadata = DataModel.metadata
connection = context.config.attributes.get("connection")

if connection is None:  # `alembic revision --autogenerate` from a developer's shell
    import sqlalchemy as sa

    from jobs_plugin.data.store import data_url

    connection = sa.create_engine(data_url()).connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table=context.config.attributes.get("version_table", VERSION_TABLE),
)
with context.begin_transaction():
    context.run_migrations()
