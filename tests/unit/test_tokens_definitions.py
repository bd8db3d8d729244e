"""API tokens (hashed, with roles) and the registry of pipeline definitions."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.store.definitions import Definitions
from conveyor.orchestrator.store.schema import api_tokens
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Role, Tokens


def test_a_token_works_until_revoked_and_its_secret_is_never_stored(db_store: SqlStore) -> None:
    tokens = Tokens(db_store)
    token, secret = tokens.create("ci-bot", "operator")

    found = tokens.authenticate(secret)
    assert found is not None and (found.name, found.role) == ("ci-bot", Role.OPERATOR)
    assert tokens.authenticate(secret + "x") is None
    assert tokens.authenticate("not-a-token") is None
    with db_store.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(api_tokens))]
    assert secret not in repr(stored)
    tokens.revoke(token.id)
    assert tokens.authenticate(secret) is None
    with pytest.raises(NotFound):
        tokens.revoke(token.id)


def test_roles_include_the_ones_below() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


def test_a_new_version_only_when_the_source_changes(db_store: SqlStore) -> None:
    registry = Definitions(db_store)
    first, created = registry.register("build", "pipelines: {a: 1}")
    same, created_again = registry.register("build", "pipelines: {a: 1}")
    second, _ = registry.register("build", "pipelines: {a: 2}")
    registry.register("deploy", "pipelines: {b: 1}")

    assert (first.version, created, same.id, created_again, second.version) == (
        1,
        True,
        first.id,
        False,
        2,
    )
    assert registry.get("build").source == "pipelines: {a: 2}"
    assert registry.get("build", 1).source == "pipelines: {a: 1}"
    assert [(d.name, d.version) for d in registry.latest()] == [("build", 2), ("deploy", 1)]
    assert [d.version for d in registry.versions("build")] == [2, 1]
    with pytest.raises(NotFound):
        registry.get("nope")
