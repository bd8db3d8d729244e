"""Alembic migrations of the execution store."""
