"""What monitors hear of a chain of brief steps run under one message.

Every step shows as a task of its own, and a chain of brief steps does not cost a
broker message per step: the ends of steps go out together, at the latest when the
delivery is over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.orchestrator.contracts import StepRef
from conveyor.workers import watch as watch_module
from conveyor.workers.watch import TaskWatch


class Broker:
    """Stands in for the app's producer pool and event dispatcher; keeps each message."""

    def __init__(self) -> None:
        self.messages: list[list[tuple[str, dict[str, Any]]]] = []
        self.amqp = SimpleNamespace(producer_pool=SimpleNamespace(acquire=self._acquire))
        self.events = SimpleNamespace(Dispatcher=self._dispatcher)

    @contextlib.contextmanager
    def _acquire(self, block: bool) -> Iterator[Any]:
        yield SimpleNamespace(connection=None, channel=None)

    @contextlib.contextmanager
    def _dispatcher(self, *_args: Any, **_kwargs: Any) -> Iterator[Any]:
        batch: list[tuple[str, dict[str, Any]]] = []
        yield SimpleNamespace(
            send=lambda type_, **fields: batch.append((type_, fields)),
            flush=lambda: self.messages.append(batch),
        )

    def tasks(self, type_: str) -> list[str]:
        """Task ids of every event of ``type_`` sent."""
        return [fields["uuid"] for batch in self.messages for t, fields in batch if t == type_]


def attempt(key: str) -> Any:
    """A brief ``step.set`` attempt of run r1, as the executor hands it to a watch."""
    return SimpleNamespace(
        ref=StepRef("r1", key, 1, "control"),
        run=SimpleNamespace(pipeline="ci"),
        plan_step=SimpleNamespace(type="step.set", brief=True),
    )


def run_chain(watch: TaskWatch, steps: int) -> None:
    """The message's own step, then ``steps`` more, each started and recorded in turn."""
    for index in range(steps + 1):
        current = attempt(f"s{index}")
        watch.started(current)
        watch.recorded([SimpleNamespace(ref=current.ref, outcome=None)])
    watch.close()


def new_watch(broker: Broker) -> TaskWatch:
    return TaskWatch(broker, StepRef("r1", "s0", 1, "control"), "t0", "t0", "w@h", True)  # type: ignore[arg-type]


def test_a_brief_chain_shows_every_step_in_few_broker_messages() -> None:
    # Given a message whose step goes on with 50 brief steps, quicker than FLUSH_INTERVAL
    broker = Broker()
    # When they run and the delivery ends
    run_chain(new_watch(broker), 50)
    # Then each of the 50 shows as received, started and succeeded, in one broker message
    for type_ in ("task-received", "task-started", "task-succeeded"):
        assert len(set(broker.tasks(type_))) == 50
    assert len(broker.messages) == 1


def test_ends_go_out_as_they_happen_once_the_interval_has_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no time to wait before events go out
    monkeypatch.setattr(watch_module, "FLUSH_INTERVAL", 0.0)
    broker = Broker()
    # When a chain of 5 brief steps runs
    run_chain(new_watch(broker), 5)
    # Then each step's end went out when it was recorded, one message each
    assert len(broker.tasks("task-succeeded")) == 5
    assert len(broker.messages) == 5
