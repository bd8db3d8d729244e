"""The changes behind /metrics are folded as they are written, scraped or not.

Nobody may scrape for months (no Prometheus at all is a fine way to run Conveyor): the
changes every transition writes must not pile up until a first scrape reads them all.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conveyor.orchestrator.store import stats
from conveyor.orchestrator.store.schema import metric_changes
from conveyor.orchestrator.store.sql import SqlStore
from tests.unit.runtime_kit import Harness
from tests.unit.test_metric_counts import a_mix_of_transitions, assert_counts_right


def unfolded(store: SqlStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(metric_changes)).scalar() or 0
        )


def test_changes_nobody_scrapes_are_folded_as_they_are_written(
    db_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a fold due every 25 changes written, and no scrape at all
    monkeypatch.setattr(stats, "FOLD_EVERY", 25)
    h = Harness.on(db_store)
    most = 0

    # When many runs go through every kind of transition
    for _ in range(8):
        a_mix_of_transitions(h, check=False)
        most = max(most, unfolded(db_store))

    # Then the changes waiting for a fold stay few, and the counts are still right
    assert most < 25 + 20, most
    assert_counts_right(db_store)


def test_a_fold_that_fails_after_the_commit_never_fails_the_write(
    db_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "FOLD_EVERY", 1)

    def broken(self: stats.Stats, limit: int = stats.FOLD_LIMIT) -> int:
        raise sa.exc.OperationalError("fold", {}, Exception("the database went away"))

    monkeypatch.setattr(stats.Stats, "fold", broken)
    h = Harness.on(db_store)

    a_mix_of_transitions(h, check=False)  # every transaction committed, none raised

    monkeypatch.undo()
    assert_counts_right(db_store)
