"""Time and ids: the one place the core asks what time it is or makes a new id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new random id for runs, steps, definitions and tokens."""
    return str(uuid.uuid4())
