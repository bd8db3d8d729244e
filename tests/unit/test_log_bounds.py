"""A step's log is bounded: capped per attempt with a marker, packed in chunks, read in pages.

The store tests run on every store (``[memory]``, ``[sqlite]``, ``[postgres]``): the twin
keeps exactly what SQL keeps. Tests of rows and of a real step are SQL and engine only.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import LogRecord
from conveyor.orchestrator.store.schema import metadata
from conveyor.orchestrator.store.sql import SqlStore
from tests.unit.engine_kit import open_engine, pipeline, run, step
from tests.unit.runtime_kit import A, Harness
from tests.unit.runtime_kit import pipeline as plan_of

CAP = 20_000
MARKER = re.compile(r"log cut: (\d+) lines \((\d+) bytes\) dropped")


def weight(text: str) -> int:
    return len(text.encode()) + 1


def started(store: Store) -> tuple[str, int]:
    """A run whose step ``a`` is claimed: (run id, attempt)."""
    h = Harness.on(store)
    run_id = h.start(plan_of(A))
    ref, _ = h.recorder.sent.pop(0)
    assert h.runtime.claim(ref, "w") is not None
    return run_id, ref.attempt


def lines(prefix: str, count: int, width: int = 99) -> list[tuple[str, str]]:
    return [("stdout", f"{prefix}{i:08d}".ljust(width, ".")) for i in range(count)]


def kept_and_marker(found: list[LogRecord]) -> tuple[list[LogRecord], tuple[int, int] | None]:
    """The ordinary lines, and (lines, bytes) the marker says were dropped."""
    markers = [x for x in found if x.stream == "system" and MARKER.search(x.text)]
    if not markers:
        return found, None
    assert len(markers) == 1, "one marker per attempt"
    match = MARKER.search(markers[0].text)
    assert match is not None
    return [x for x in found if x is not markers[0]], (int(match[1]), int(match[2]))


def test_an_attempt_printing_far_more_than_the_cap_keeps_its_head_and_says_what_went(
    store: Store,
) -> None:
    # Given a store keeping 20 kB per attempt, and a step printing 100 x that
    store.log_max_bytes = CAP  # type: ignore[attr-defined]
    run_id, attempt = started(store)
    printed = lines("line ", 20_000)  # 100 bytes each, newline included: 2 MB
    for start in range(0, len(printed), 500):  # as the logger flushes: 500 lines at a time
        store.append_logs(run_id, "a", attempt, printed[start : start + 500])
    # ...and its last lines written with its result, in the run's transaction
    with store.transaction(run_id) as tx:
        tx.append_logs([("a", attempt, [("stderr", "the very end")])])

    # When its log is read
    found = store.list_logs(run_id, "a")

    # Then the head is kept up to the cap, in order, and one marker counts the rest exactly
    kept, dropped = kept_and_marker(found)
    assert [(x.stream, x.text) for x in kept] == printed[: len(kept)]
    assert sum(weight(x.text) for x in kept) <= CAP
    assert len(kept) == CAP // 100
    assert found[-1].stream == "system"  # the marker stands where the lines went
    rest = [*printed[len(kept) :], ("stderr", "the very end")]
    assert dropped == (len(rest), sum(weight(t) for _, t in rest))
    assert [x.id for x in found] == sorted({x.id for x in found})


def test_a_capped_attempt_leaves_the_next_attempt_its_own_cap(store: Store) -> None:
    store.log_max_bytes = CAP  # type: ignore[attr-defined]
    run_id, attempt = started(store)
    store.append_logs(run_id, "a", attempt, lines("one ", 1000))

    store.append_logs(run_id, "a", attempt + 1, lines("two ", 10))

    second = store.list_logs(run_id, "a", attempt=attempt + 1)
    assert [(x.stream, x.text) for x in second] == lines("two ", 10)
    assert kept_and_marker(second)[1] is None


def test_reading_page_by_page_after_the_last_id_gives_every_line_once_in_order(
    store: Store,
) -> None:
    # Given a log of two attempts spread over many chunks (a 50 kB line fills one alone)
    run_id, attempt = started(store)
    written = [*lines("x", 3000, 40), ("stderr", "y" * 50000), *lines("z", 2000, 40)]
    for start in range(0, len(written), 700):
        store.append_logs(run_id, "a", attempt, written[start : start + 700])
    store.append_logs(run_id, "a", attempt + 1, lines("again", 5))

    # When it is read in pages of 333 lines, each after the last id of the one before
    seen: list[LogRecord] = []
    while page := store.list_logs(run_id, "a", after_id=seen[-1].id if seen else 0, limit=333):
        seen += page

    # Then every line comes once, in the order written, and the tail agrees
    assert [(x.stream, x.text) for x in seen] == written + lines("again", 5)
    assert [x.attempt for x in seen[-6:]] == [attempt] + [attempt + 1] * 5
    tail = store.tail_logs(run_id, "a", 2003, attempt=attempt)
    assert [(x.stream, x.text) for x in tail] == written[-2003:]
    assert next(iter(store.iter_logs(run_id, "a", after_id=seen[2999].id))).text == "y" * 50_000


def test_lines_are_stored_many_to_a_row(db_store: SqlStore) -> None:
    # Given a step that printed 20,000 short lines
    run_id, attempt = started(db_store)
    printed = lines("n", 20_000, 30)
    for start in range(0, len(printed), 500):
        db_store.append_logs(run_id, "a", attempt, printed[start : start + 500])

    # Then they take a few dozen rows, not 20,000
    log_tables = [t for t in metadata.sorted_tables if t.name.startswith("step_log")]
    with db_store.engine.connect() as conn:
        rows = sum(
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0
            for t in log_tables
        )
    assert rows is not None and rows <= 40
    assert len(db_store.list_logs(run_id, "a")) == 20_000


def test_a_real_step_printing_megabytes_stores_the_cap_and_a_marker(settings: Settings) -> None:
    # Given an embedded engine keeping 64 KiB of log per attempt
    capped = settings.model_copy(update={"log_max_bytes": 65_536})
    text = pipeline("""
        - name: loud
          type: step.shell_exec
          config:
            commands: ["head -c 4000000 /dev/zero | tr '\\\\0' x | fold -w 99"]
    """)
    engine: EmbeddedEngine
    with open_engine(capped) as engine:
        # When a step prints 4 MB (40,404 lines)
        result = run(engine, text)
        found = engine.core.store.list_logs(result.id, "loud")
        assert step(engine, result.id, "loud").status == "succeeded"

    # Then its log holds at most the cap, and the marker says how much went
    kept, dropped = kept_and_marker(found)
    assert dropped is not None, [x.text for x in found[-3:]]
    assert sum(weight(x.text) for x in kept) <= 65_536
    printed = [x for x in kept if x.text == "x" * 99]
    assert len(printed) > 600 and printed == kept[-len(printed) :]  # the head, in order
    assert dropped[0] >= 40_404 - len(printed) and dropped[1] >= 4_040_404 - 65_536
    assert found[-1].text.startswith("[conveyor] log cut")
