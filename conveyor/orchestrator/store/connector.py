"""The store's connection to its database: the engines, and the one way through them.

Every read and write of the store's modules goes through ``Connector``: ``rows`` and
``first`` on the read engine, ``writing`` in one transaction on the write engine, and
the run transaction of ``SqlStore``. Driver errors become Conveyor errors in one place,
``translate_errors``, so no caller outside ``store`` ever sees SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from conveyor.orchestrator.errors import (
    CONFLICTING_WRITE,
    Conflict,
    StoreUnavailable,
    UnstorableValue,
)
from conveyor.orchestrator.store import db

log = logging.getLogger(__name__)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors into Conveyor errors at the store's boundary."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        # The driver's text names constraints and key values: the log has it, not the client.
        log.warning("conflicting write: %s", exc.orig)
        raise Conflict(CONFLICTING_WRITE) from exc
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable: {exc.orig}") from exc
    except sa.exc.DataError as exc:  # a value the database cannot hold or compare
        raise UnstorableValue(f"the database refused a value: {_first_line(exc.orig)}") from exc
    except UnicodeEncodeError as exc:  # the driver's own, encoding a lone surrogate
        raise UnstorableValue(f"a text value is not valid Unicode: {exc.reason}") from exc
    except sa.exc.StatementError as exc:  # raised while binding: the check of JSONValue
        if isinstance(exc.orig, UnstorableValue):
            raise exc.orig from exc
        if isinstance(exc.orig, OverflowError):  # SQLite: an integer past 64 bits
            raise UnstorableValue("an integer out of range (past 64 bits)") from exc
        raise


def _first_line(error: BaseException | None) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Connector:
    """A database's engines (one for writes, one for reads) and its schema version."""

    def __init__(self, url: str, *, pre_ping: bool = True) -> None:
        self.url = db.normalise_url(url)
        self.engine, self.read_engine = db.create_engines(self.url, pre_ping=pre_ping)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite database."""
        return self.engine.dialect.name == "sqlite"

    def upgrade(self) -> None:
        """Bring the schema to the newest migration."""
        with translate_errors():
            db.upgrade(self.engine)

    def ensure_current(self) -> None:
        """Raise SchemaOutdated unless the schema is at the newest migration."""
        db.ensure_current(self.engine)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()
        self.read_engine.dispose()

    def rows(self, query: sa.Executable) -> list[sa.RowMapping]:
        """Every row a read returns, as mappings (on the read engine)."""
        with translate_errors(), self.read_engine.connect() as conn:
            return list(conn.execute(query).mappings())

    def first(self, query: sa.Executable) -> sa.RowMapping | None:
        """The first row a read returns, or None (on the read engine)."""
        with translate_errors(), self.read_engine.connect() as conn:
            return conn.execute(query).mappings().first()

    @contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """A connection in one transaction on the write engine.

        It commits when the block ends and rolls back when the block raises.
        """
        with translate_errors(), self.engine.begin() as conn:
            yield conn
