"""Registered pipeline definitions: every version of every pipeline, by name."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import definitions
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

    def __init__(self, store: Connector) -> None:
        self.store = store

    def register(self, name: str, source: str) -> tuple[Definition, bool]:
        """Store ``source`` as the newest version of ``name``; True when it is new."""
        with self.store.writing() as conn:
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
        return [_definition(r) for r in self.store.rows(query)]

    def versions(self, name: str) -> list[Definition]:
        """Every version of one pipeline, newest first."""
        query = (
            sa.select(definitions)
            .where(definitions.c.name == name)
            .order_by(definitions.c.version.desc())
        )
        found = [_definition(r) for r in self.store.rows(query)]
        if not found:
            raise NotFound(f"no pipeline {name!r}")
        return found

    def mentioning(self, word: str) -> list[str]:
        """Ids of the versions whose text holds ``word`` anywhere (found without parsing)."""
        text = sa.cast(definitions.c.definition, sa.Text)
        query = sa.select(definitions.c.id).where(text.contains(word, autoescape=True))
        return [row["id"] for row in self.store.rows(query)]

    def by_ids(self, ids: Collection[str]) -> list[Definition]:
        """The versions with these ids (in no particular order)."""
        query = sa.select(definitions).where(definitions.c.id.in_(list(ids)))
        return [_definition(r) for r in self.store.rows(query)]

    def _one(self, *where: Any) -> Definition:
        query = sa.select(definitions).where(*where).order_by(definitions.c.version.desc()).limit(1)
        row = self.store.first(query)
        if row is None:
            raise NotFound("no such pipeline definition")
        return _definition(row)


def _definition(row: sa.RowMapping) -> Definition:
    return Definition(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        source=row["definition"]["source"],
        created_at=row["created_at"],
    )
