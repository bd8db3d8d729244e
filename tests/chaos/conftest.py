"""Fixtures of the fault tests."""

from __future__ import annotations

import pytest

from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalSandboxFactory


@pytest.fixture
def factory(settings: Settings) -> LocalSandboxFactory:
    """The local sandbox kind, on the test's data directory."""
    return LocalSandboxFactory(settings)
