"""Alembic environment: runs migrations on the engine that parentgate passes in."""

from __future__ import annotations

from alembic import context

from gateway.store.models import Base

engine = context.config.attributes["connection_engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
