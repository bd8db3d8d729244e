"""API tokens: random secrets shown once, stored only as SHA-256 hashes, with a role.

Roles are ordered: a viewer reads, an operator also submits, cancels and retries runs,
an admin also manages tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.errors import NotFound
from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.schema import api_tokens

PREFIX = "cvt_"
USE_RESOLUTION = timedelta(minutes=1)


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """True when this role is ``needed`` or above it."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class Token:
    """A token as stored: never its secret."""

    id: str
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_secret(secret: str) -> str:
    """The stored form of a token (tokens are random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """Create, check, list and revoke API tokens."""

    def __init__(self, store: Connector) -> None:
        self.store = store

    def create(self, name: str, role: Role | str) -> tuple[Token, str]:
        """A new token and its secret, which is shown this once and never stored."""
        secret = PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": str(uuid.uuid4()),
            "name": name,
            "role": Role(role).value,
            "token_hash": hash_secret(secret),
            "created_at": utcnow(),
        }
        with self.store.writing() as conn:
            conn.execute(api_tokens.insert().values(**row))
        return _token({**row, "last_used_at": None, "revoked_at": None}), secret

    def authenticate(self, secret: str) -> Token | None:
        """The live token with this secret, or None; notes when it was last used."""
        if not secret.startswith(PREFIX):
            return None
        digest = hash_secret(secret)
        with self.store.writing() as conn:
            row = (
                conn.execute(
                    sa.select(api_tokens).where(
                        api_tokens.c.token_hash == digest, api_tokens.c.revoked_at.is_(None)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            now, last = utcnow(), row["last_used_at"]
            # Noted at most once a minute: not a commit for every API call.
            if last is None or now - last > USE_RESOLUTION:
                conn.execute(
                    api_tokens.update().where(api_tokens.c.id == row["id"]).values(last_used_at=now)
                )
        return _token(row)

    def list(self) -> list[Token]:
        """Every token, newest first."""
        query = sa.select(api_tokens).order_by(api_tokens.c.created_at.desc())
        return [_token(r) for r in self.store.rows(query)]

    def revoke(self, token_id: str) -> None:
        """Stop a token from working."""
        with self.store.writing() as conn:
            result = conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        if result.rowcount != 1:
            raise NotFound(f"no live token {token_id}")


def _token(row: Any) -> Token:
    return Token(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
