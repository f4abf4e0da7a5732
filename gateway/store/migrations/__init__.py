"""Alembic migrations for the parentgate schema."""
