"""The recovery knobs: a lease is always renewed in time, however small it is set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conveyor.orchestrator.settings import Settings


def test_a_short_lease_is_renewed_often_enough_without_saying_how_often() -> None:
    # A lease of 2 s with the default heartbeat (5 s) would run out under live workers
    settings = Settings(lease_seconds=2)

    assert settings.heartbeat_seconds * 2 <= settings.lease_seconds
    assert Settings().heartbeat_seconds == 5.0  # the default lease keeps its heartbeat


def test_a_heartbeat_too_slow_for_the_lease_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE_SECONDS", "3")
    monkeypatch.setenv("CONVEYOR_HEARTBEAT_SECONDS", "2")

    with pytest.raises(ValidationError, match=r"heartbeat_seconds .* at most half of lease"):
        Settings()


def test_small_recovery_settings_are_taken_as_given() -> None:
    settings = Settings(
        lease_seconds=1.5, heartbeat_seconds=0.3, reconcile_seconds=0.5, stale_after_seconds=1
    )
    assert (settings.lease_seconds, settings.heartbeat_seconds) == (1.5, 0.3)
    assert (settings.reconcile_seconds, settings.stale_after_seconds) == (0.5, 1.0)
