"""Alembic environment: always run with a connection handed in by thoth_pbx.store.db."""

from __future__ import annotations

from alembic import context

from thoth_pbx.store.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `thoth-pbx db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
context.run_migrations()
