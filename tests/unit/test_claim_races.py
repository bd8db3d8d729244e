"""A claim that waits for the run's lock while another claimer takes its step.

Brief steps ride one message per batch; a message whose step another batch took while
its claim waited for the run's row must still take the run's other queued brief steps,
or they are left without any message (bursts then stall until the reconciler).
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from conveyor.orchestrator.contracts import RunTransaction, StepRef, Store
from conveyor.orchestrator.engine.attempt import Attempt
from conveyor.orchestrator.engine.claims import BRIEF_BATCH
from conveyor.orchestrator.store.sql import SqlStore
from tests.unit.runtime_kit import Harness, pipeline


def brief(n: int) -> list[str]:
    return [f"{{name: b{i}, type: brief, needs: []}}" for i in range(n)]


def wait_until_blocked(store: Store, thread: threading.Thread) -> None:
    """Return once ``thread`` waits for a lock (on Postgres: seen waiting by the server)."""
    if isinstance(store, SqlStore) and store.engine.dialect.name == "postgresql":
        query = sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        until = time.monotonic() + 10
        while time.monotonic() < until:
            with store.engine.connect() as conn:
                if conn.execute(query).scalar():
                    return
            time.sleep(0.02)
        raise AssertionError("the claim never waited for the run's lock")
    thread.join(0.3)  # elsewhere writers take turns: give it time to queue up


def test_a_message_whose_step_was_taken_while_it_waited_takes_the_rest(
    h: Harness, store: Store
) -> None:
    # Given a run whose brief steps went out as one message per batch
    run_id = h.start(pipeline(*brief(BRIEF_BATCH + 4)))
    refs = [ref for ref, _ in h.recorder.sent]
    assert [r.step_key for r in refs] == ["b0", f"b{BRIEF_BATCH}"]
    message = refs[0]

    # And another worker's claim holds the run's lock, taking the step the message names
    holding, release = threading.Event(), threading.Event()

    def other_claimer() -> None:
        def work(tx: RunTransaction) -> None:
            tx.claim_all([tx.step(message.step_key)], "other", h.runtime.lease)
            holding.set()
            release.wait(10)

        h.runtime.write(run_id, work)

    other = threading.Thread(target=other_claimer)
    other.start()
    assert holding.wait(10)

    # When the message is delivered meanwhile, and its claim waits for that lock
    got: list[Attempt | None] = []
    late = threading.Thread(target=lambda: got.append(h.runtime.claim(message, "w1")))
    late.start()
    wait_until_blocked(store, late)
    release.set()
    other.join(10)
    late.join(10)

    # Then it takes the run's other queued brief steps: one batch, as the message stood for
    claim = got[0]
    assert claim is not None, "the message was dropped: its batch is left without a message"
    taken = [c.ref.step_key for c in (claim.alone(), *claim.batch)]
    assert len(taken) == BRIEF_BATCH and message.step_key not in taken
    # And with the other message, every brief step of the run is taken
    second = h.runtime.claim(refs[1], "w2")
    assert second is not None
    statuses = h.statuses(run_id)
    assert set(statuses.values()) == {"running"}, statuses


def test_the_message_of_a_step_not_brief_taken_meanwhile_claims_nothing(
    h: Harness, store: Store
) -> None:
    run_id = h.start(pipeline("{name: n, type: noop, needs: []}", *brief(3)))
    sent = {ref.step_key: ref for ref, _ in h.recorder.sent}
    message: StepRef = sent["n"]

    def work(tx: RunTransaction) -> None:
        tx.claim_all([tx.step("n")], "other", h.runtime.lease)

    h.runtime.write(run_id, work)

    assert h.runtime.claim(message, "w1") is None
    # The brief steps still have their own message, untouched by this one
    assert {k: v for k, v in h.statuses(run_id).items() if k != "n"} == dict.fromkeys(
        ["b0", "b1", "b2"], "queued"
    )
