"""Alembic's environment: migrations run on the connection :func:`upgrade` hands over (there is
no alembic.ini and no URL here); offline mode (SQL scripts) is not supported."""

from __future__ import annotations

from alembic import context

from shared.inference_log.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through shared.inference_log.upgrade(engine)")

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
