"""Unit-test fixtures: the runtime harness on every store, an embedded engine, artifacts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conveyor.orchestrator.contracts import ArtifactStore, Store
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalArtifactStore
from tests.unit.engine_kit import open_engine
from tests.unit.runtime_kit import Harness


@pytest.fixture
def h(store: Store) -> Harness:
    """A runtime on each store in turn whose dispatches are recorded, driven by the test."""
    return Harness.on(store)


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
