"""What the store says when the database refuses a write: nothing of its schema or data."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from conveyor.orchestrator.errors import CONFLICTING_WRITE, Conflict
from conveyor.orchestrator.store.sql import SqlStore


def test_a_conflicting_write_names_no_constraint_nor_value(
    sqlite_store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a write the database refuses for a unique key, with a value a client sent
    table = sa.Table("probe", sa.MetaData(), sa.Column("name", sa.Text, unique=True))
    with sqlite_store.engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert().values(name="hunter-secret-value"))

    # When the store writes it again
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(Conflict) as raised,
        sqlite_store.writing() as conn,
    ):
        conn.execute(table.insert().values(name="hunter-secret-value"))

    # Then the error a client sees is a fixed sentence, and the log has the driver's text
    assert str(raised.value.message) == CONFLICTING_WRITE
    assert "probe" not in raised.value.message and "UNIQUE" not in raised.value.message
    assert "UNIQUE constraint failed: probe.name" in caplog.text
    # and no logged error shows the values that were bound
    assert "hunter-secret-value" not in caplog.text
