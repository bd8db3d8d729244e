"""A step's output as blocks of lines: cut from the pipe, masked, packed, and read back.

Output travels as blocks (never a Python object per line) from the sandbox to the
store; readers still see lines, with ids, ``after=`` and the tail as before. The store
tests run on every store (``[memory]``, ``[sqlite]``, ``[postgres]``).
"""

from __future__ import annotations

import base64
from pathlib import Path

from click.testing import CliRunner

from conveyor.cli.main import cli
from conveyor.orchestrator.contracts import Store
from conveyor.orchestrator.engine.context import MAX_LINE, StoreLogger
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.engine.variables import Masker
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.logchunks import Kept, decode, pack
from conveyor.providers.sandbox_common import MAX_LINE_BYTES, OutputSplitter
from tests.unit.test_log_bounds import started

SECRET = "hunter2-very-secret"


def split(*reads: bytes) -> tuple[list[str], list[str]]:
    """(blocks handed to the sink, the splitter's tail) for these reads of a pipe."""
    blocks: list[str] = []
    splitter = OutputSplitter(blocks.append)
    for data in reads:
        splitter.feed(data)
    splitter.flush()
    return blocks, list(splitter.tail)


def texts(store: Store, run_id: str, **kwargs: object) -> list[str]:
    return [x.text for x in store.iter_logs(run_id, "a", **kwargs)]  # type: ignore[arg-type]


# --- from the pipe: blocks of whole lines -------------------------------------------------


def test_output_is_handed_over_in_blocks_of_whole_lines() -> None:
    blocks, tail = split(b"one\ntwo\nthr", b"ee\r\nfour", b"\n", b"last, no newline")

    assert blocks == ["one\ntwo\n", "three\n", "four\n", "last, no newline\n"]
    assert tail == ["one", "two", "three", "four", "last, no newline"]


def test_a_character_split_between_two_reads_is_decoded_whole() -> None:
    blocks, _ = split("café\n".encode()[:4], "café\n".encode()[4:])

    assert blocks == ["café\n"]


def test_one_endless_line_is_cut_so_memory_stays_bounded() -> None:
    blocks, _ = split(*[b"x" * 50_000] * 4)

    assert max(len(b) for b in blocks) <= MAX_LINE_BYTES + 1
    assert "".join(blocks).replace("\n", "") == "x" * 200_000


# --- the logger: a block masked, cut and buffered as one string ---------------------------


def logged(store: Store, masker: Masker, *blocks: str) -> list[str]:
    """The lines stored for these blocks written through a StoreLogger."""
    run_id, attempt = started(store)
    log = StoreLogger(store, run_id, "a", attempt, masker)
    for block in blocks:
        log.write(block)
    log.flush()
    return texts(store, run_id)


def test_a_secret_is_masked_wherever_it_falls_in_a_block(store: Store) -> None:
    block = f"{SECRET}\nbefore {SECRET} after\n{'x' * 5000}{SECRET}\n"

    found = logged(store, Masker({"token": SECRET}), block)

    assert found == ["***", "before *** after", "x" * 5000 + "***"]


def test_a_multi_line_secret_is_masked_in_one_block_and_across_two(store: Store) -> None:
    key = "-----BEGIN KEY-----\nAAAAsecretbody1234\n-----END KEY-----"
    masker = Masker({"key": key})
    first, second = key.split("\n", 1)

    whole = logged(store, masker, f"key: {key}\ndone\n")
    halves = logged(store, masker, f"{first}\n", f"{second}\n")

    assert whole == ["key: ***", "done"]
    assert key.split("\n")[1] not in "\n".join(halves)
    assert "secretbody" not in "\n".join(whole + halves)


def test_values_derived_from_a_secret_are_masked_in_long_blocks_too(store: Store) -> None:
    masker = Masker({"token": SECRET})
    masker.add([f"Bearer {SECRET}-derived"])
    padding = "p" * 10_000  # a long block is searched for each value before the regex
    encoded = base64.b64encode(SECRET.encode()).decode()

    found = logged(
        store, masker, f"{padding}\nheader: Bearer {SECRET}-derived\nbasic {encoded}\nb\n"
    )

    assert found == [padding, "header: ***", "basic ***", "b"]


def test_long_lines_in_a_block_are_cut_and_nul_shows_as_a_replacement(store: Store) -> None:
    found = logged(store, Masker({}), f"short\n{'y' * (MAX_LINE + 10)}\nnul\x00here\n")

    assert found[0] == "short" and found[2] == "nul\ufffdhere"
    assert found[1] == "y" * MAX_LINE + " …[line cut]"


# --- the store: blocks packed into chunks, read back as lines -----------------------------


def test_a_big_block_fills_many_chunks_and_every_line_keeps_its_place(store: Store) -> None:
    # Given one block of 200,000 lines, written at once
    run_id, attempt = started(store)
    printed = [str(n) for n in range(200_000)]
    store.append_logs(run_id, "a", attempt, [("stdout", "\n".join(printed))])
    store.append_logs(run_id, "a", attempt, [("stderr", "after")])

    # Then it reads back line by line, and after= goes on from any line
    found = list(store.iter_logs(run_id, "a"))
    assert [x.text for x in found] == [*printed, "after"]
    assert found[-1].stream == "stderr" and len({x.id for x in found}) == len(found)
    assert texts(store, run_id, after_id=found[123_456].id)[:2] == ["123457", "123458"]

    # And the tail is the last lines, with the same ids a whole read gives
    tail = store.tail_logs(run_id, "a", 100)
    assert [(x.id, x.text) for x in tail] == [(x.id, x.text) for x in found[-100:]]
    assert [x.text for x in store.tail_logs(run_id, "a", 3, attempt=attempt)] == [
        "199998",
        "199999",
        "after",
    ]


def test_the_cap_cuts_a_block_at_a_whole_line(store: Store) -> None:
    store.log_max_bytes = 1024  # type: ignore[attr-defined]
    run_id, attempt = started(store)

    store.append_logs(run_id, "a", attempt, [("stdout", "\n".join(["z" * 99] * 50))])

    found = texts(store, run_id)
    assert found[:10] == ["z" * 99] * 10 and len(found) == 11
    assert found[-1].startswith("[conveyor] log cut: 40 lines (4000 bytes) dropped")


def test_chunks_written_a_line_per_item_before_blocks_still_read() -> None:
    old = '["one",["stderr","two"],"three\\nstill three"]'

    assert decode(old) == [("", "one"), ("stderr", "two"), ("stderr", "three still three")]
    chunk = pack(Kept(), decode(old), 10_000).chunks[0]
    assert [text for _, text in chunk.texts()][-1] == "three still three"


# --- a real step, and the CLI -------------------------------------------------------------


def test_a_loud_step_is_stored_whole_and_the_cli_prints_it_whole_or_its_tail(
    settings: Settings, tmp_path: Path
) -> None:
    # Given an embedded run whose step printed 150,000 lines (more than any old limit)
    pipeline = "pipelines:\n  p:\n    steps:\n      - {name: a, type: step.shell_exec, config: {commands: ['seq 150000']}}\n"
    engine = EmbeddedEngine(settings)
    try:
        compiled = engine.compile(pipeline)
        run = engine.start(compiled.select(None), compiled.source)
        assert engine.wait(run.id, poll=0.05).status == "succeeded"
        step = engine.core.store.get_step(run.id, "a")
    finally:
        engine.close()
    assert step.outputs is not None and step.outputs["stdout"].endswith("149999\n150000")
    base = ["--data-dir", str(settings.data_dir)]

    # When the CLI prints its log whole, and its tail
    whole = CliRunner().invoke(cli, [*base, "logs", run.id, "a"])
    tail = CliRunner().invoke(cli, [*base, "logs", run.id, "a", "--tail", "3"])
    no_step = CliRunner().invoke(cli, [*base, "logs", run.id, "--tail", "3"])

    # Then the whole log is every line, and the tail the last three
    assert whole.exit_code == 0, whole.output
    printed = whole.output.splitlines()
    assert printed[0] == "$ seq 150000" and printed[1:] == [str(n) for n in range(1, 150_001)]
    assert tail.exit_code == 0 and tail.output.splitlines() == ["149998", "149999", "150000"]
    assert no_step.exit_code == 2 and "--tail needs a STEP" in no_step.output
