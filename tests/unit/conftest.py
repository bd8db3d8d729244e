"""Unit-test fixtures: the store under test is SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.providers.local import LocalArtifactStore
from tests.unit.engine_kit import open_engine
from tests.unit.runtime_kit import Harness, Recorder


@pytest.fixture
def db_store(store: SqlStore) -> SqlStore:
    """The store the shared store tests run against (SQLite here, Postgres in integration/)."""
    return store


@pytest.fixture
def h(store: SqlStore) -> Harness:
    """A runtime on SQLite whose dispatches are recorded, driven by the test."""
    recorder = Recorder()
    return Harness(Runtime(store, TemplateEngine(), recorder), recorder, store)


@pytest.fixture
def engine(settings: Settings) -> Iterator[EmbeddedEngine]:
    """An embedded engine on the test's data directory, closed afterwards."""
    with open_engine(settings) as e:
        yield e


@pytest.fixture
def artifacts(settings: Settings) -> ArtifactStore:
    """The artifact store the shared artifact tests run against: local disk here."""
    return LocalArtifactStore(settings)


@pytest.fixture
def corrupt(settings: Settings) -> Callable[[str, str, bytes], None]:
    """Overwrite an artifact's bytes behind the store's back."""

    def overwrite(run_id: str, key: str, data: bytes) -> None:
        (settings.data_dir / "artifacts" / run_id / key).write_bytes(data)

    return overwrite
