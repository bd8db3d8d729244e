"""The inline dispatcher: threads, etas, and redelivery when an execution blows up."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.dispatch import MAX_REDELIVERIES, InlineDispatcher

REF = StepRef("run", "step", 1, "control")


def test_a_step_whose_execution_raised_is_delivered_again() -> None:
    calls: list[float] = []
    done = threading.Event()

    def flaky(ref: StepRef) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        done.set()

    dispatcher = InlineDispatcher(2, redelivery_delay=0.02)
    dispatcher.bind(flaky)
    dispatcher.dispatch(REF)

    assert done.wait(5)
    assert len(calls) == 3
    dispatcher.close()


def test_redelivery_gives_up_after_a_bounded_number_of_tries() -> None:
    calls: list[StepRef] = []

    def broken(ref: StepRef) -> None:
        calls.append(ref)
        raise RuntimeError("always")

    dispatcher = InlineDispatcher(1, redelivery_delay=0.001)
    dispatcher.bind(broken)
    dispatcher.dispatch(REF)
    deadline = time.monotonic() + 10
    while len(calls) <= MAX_REDELIVERIES and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)

    assert len(calls) == MAX_REDELIVERIES + 1
    dispatcher.close()


def test_an_eta_delays_execution_and_the_rest_run_at_once() -> None:
    seen: list[tuple[str, float]] = []
    both = threading.Event()

    def record(ref: StepRef) -> None:
        seen.append((ref.step_key, time.monotonic()))
        if len(seen) == 2:
            both.set()

    dispatcher = InlineDispatcher(2)
    dispatcher.bind(record)
    start = time.monotonic()
    dispatcher.dispatch(StepRef("run", "later", 1, "q"), utcnow() + timedelta(seconds=0.3))
    dispatcher.dispatch(StepRef("run", "now", 1, "q"))

    assert both.wait(5)
    assert [key for key, _ in seen] == ["now", "later"]
    assert seen[1][1] - start >= 0.25
    dispatcher.close()
