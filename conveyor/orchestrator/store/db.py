"""Database engines and migrations: one code path for SQLite and Postgres.

Alembic loads only to migrate. Whether a database is current is asked of every store
a process opens (and of ``/healthz``), so that check reads the version table with a
plain query and compares it with the head read from the migration files' own
``revision`` lines: importing alembic would cost ``conveyor runs`` a third of its time.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from conveyor.orchestrator.errors import ConveyorError, SchemaOutdated, StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
#: Alembic's table of the revision a database is at (its default name, which env.py keeps).
VERSION_TABLE = "alembic_version"
#: ``revision = "0007"`` and ``down_revision = "0006"`` (or None, or a tuple: a merge).
_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


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
    from alembic.config import Config  # noqa: PLC0415  (see the module's docstring)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration this code knows."""
    return _head_from_files() or _head_from_alembic()


def _head_from_files() -> str | None:
    """The one revision no other migration revises, read from the files' text.

    None when the files say anything this reading does not expect (no single head, a
    line it cannot read): alembic then answers, with its own errors.
    """
    revised: set[str] = set()
    revisions: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found:
            continue  # __init__.py
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found.get("down_revision", "None"))
        except (ValueError, SyntaxError):
            return None
        revisions.add(revision)
        revised.update([down] if isinstance(down, str) else down or ())
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def _head_from_alembic() -> str:
    from alembic.script import ScriptDirectory  # noqa: PLC0415  (see the module's docstring)

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).all()  # noqa: S608
            if len(rows) > 1:  # branches, which Conveyor's migrations never make
                return _current_from_alembic(conn)
            return rows[0][0] if rows else None
    except sa.exc.OperationalError as exc:
        raise StoreUnavailable(f"database unreachable: {exc.orig}") from exc


def _current_from_alembic(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command  # noqa: PLC0415  (see the module's docstring)

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
