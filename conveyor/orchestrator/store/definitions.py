"""Registered pipeline definitions: every version of every pipeline, by name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.store.schema import definitions
from conveyor.orchestrator.store.sql import SqlStore, translate_errors
from conveyor.orchestrator.store.transaction import version_definition


@dataclass(frozen=True)
class Definition:
    """One version of a pipeline definition."""

    id: str
    name: str
    version: int
    source: str
    created_at: datetime


class Definitions:
    """Register and read pipeline definitions (a new version only when the source changes)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def register(self, name: str, source: str) -> tuple[Definition, bool]:
        """Store ``source`` as the newest version of ``name``; True when it is new."""
        with translate_errors(), self.store.engine.begin() as conn:
            definition_id, _, created = version_definition(conn, name, source)
        return self._one(definitions.c.id == definition_id), created

    def get(self, name: str, version: int | None = None) -> Definition:
        """A version of a pipeline (the newest by default)."""
        if version is not None:
            return self._one(definitions.c.name == name, definitions.c.version == version)
        return self._one(definitions.c.name == name)

    def latest(self) -> list[Definition]:
        """The newest version of every registered pipeline, by name."""
        newest = (
            sa.select(definitions.c.name, sa.func.max(definitions.c.version).label("version"))
            .group_by(definitions.c.name)
            .subquery()
        )
        query = (
            sa.select(definitions)
            .join(
                newest,
                sa.and_(
                    definitions.c.name == newest.c.name, definitions.c.version == newest.c.version
                ),
            )
            .order_by(definitions.c.name)
        )
        return [_definition(r) for r in self._rows(query)]

    def versions(self, name: str) -> list[Definition]:
        """Every version of one pipeline, newest first."""
        query = (
            sa.select(definitions)
            .where(definitions.c.name == name)
            .order_by(definitions.c.version.desc())
        )
        found = [_definition(r) for r in self._rows(query)]
        if not found:
            raise NotFound(f"no pipeline {name!r}")
        return found

    def _one(self, *where: Any) -> Definition:
        query = sa.select(definitions).where(*where).order_by(definitions.c.version.desc()).limit(1)
        rows = self._rows(query)
        if not rows:
            raise NotFound("no such pipeline definition")
        return _definition(rows[0])

    def _rows(self, query: Any) -> list[Any]:
        with translate_errors(), self.store.read_engine.connect() as conn:
            return list(conn.execute(query).mappings())


def _definition(row: Any) -> Definition:
    return Definition(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        source=row["definition"]["source"],
        created_at=row["created_at"],
    )
