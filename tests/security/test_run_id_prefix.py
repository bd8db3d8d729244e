"""A run-id prefix is matched as written: `_` and `%` are characters, not SQL wildcards."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.errors import NotFound
from tests.unit.test_store import new_run


@pytest.mark.parametrize("ref", ["____", "%%%%", "____-%", "%", "\\___", "_%_%_%_%", "[a-f]%"])
def test_wildcards_in_a_run_id_prefix_match_nothing(store: Store, ref: str) -> None:
    new_run(store, key="one")
    new_run(store, key="two")

    with pytest.raises(NotFound):
        store.find_run(ref)


def test_a_real_prefix_still_finds_its_run(store: Store) -> None:
    run_id = new_run(store)

    assert store.find_run(run_id[:4]).id == run_id
    assert store.find_run(run_id[:9]).id == run_id  # with the first `-`
    with pytest.raises(NotFound):
        store.find_run(run_id[:4] + "%")


def test_a_prefix_matches_with_its_case_on_every_database(store: Store) -> None:
    # Ids are lower-case hex: the same prefix in upper case names no run, on SQLite too
    # (whose LIKE ignores case) as on Postgres and the twin.
    run_id = new_run(store)
    prefix = run_id[:8]
    if prefix.upper() == prefix:  # all digits: no case to change
        prefix = run_id[:8] + "-" + run_id[9:13]
    assert prefix.upper() != prefix

    with pytest.raises(NotFound):
        store.find_run(prefix.upper())
