"""Database engines and migrations: one code path for SQLite and Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from conveyor.orchestrator.errors import ConveyorError, SchemaOutdated, StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for Postgres whatever spelling the URL has."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engines(url: str, *, pre_ping: bool = True) -> tuple[sa.Engine, sa.Engine]:
    """Return (write engine, read engine); the same engine twice except on SQLite.

    On SQLite, writes begin with ``BEGIN IMMEDIATE`` so two writers queue on the busy
    timeout instead of failing when a read lock cannot be upgraded; reads keep plain
    deferred transactions so a watcher never blocks a writer (WAL mode).

    ``pre_ping`` tests a pooled Postgres connection before each use (a round trip).
    Callers that retry on StoreUnavailable can go without: a connection a restart
    killed fails once, SQLAlchemy then invalidates the whole pool, and the retry
    connects afresh.
    """
    url = normalise_url(url)
    if not url.startswith("sqlite"):
        try:
            engine = sa.create_engine(
                url,
                pool_pre_ping=pre_ping,
                pool_size=10,
                max_overflow=20,
                hide_parameters=True,  # an error in a log never shows the values bound
            )
        except sa.exc.ArgumentError as exc:  # unknown dialect or a malformed URL
            raise ConveyorError(f"the database URL is not usable: {exc}") from None
        return engine, engine
    _make_parent(url)
    return _sqlite_engine(url, immediate=True), _sqlite_engine(url, immediate=False)


def _make_parent(url: str) -> None:
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_engine(url: str, *, immediate: bool) -> sa.Engine:
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 60},
        hide_parameters=True,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy issues BEGIN itself, below
        cursor = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration this code knows."""
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise StoreUnavailable(f"database unreachable: {exc.orig}") from exc


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def ensure_current(engine: sa.Engine) -> None:
    """Refuse to work on a database whose schema is not the one this code expects."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutdated(
            f"the database schema is at {current or 'nothing'}, this Conveyor needs {head}: "
            "run `conveyor db upgrade`"
        )
