"""A step's log in SQL: chunks appended under the cap, and read a page at a time.

What a chunk is, and the cap, are in ``logchunks.py``; this is only how they reach the
database and come back. Reads never hold more than a page of chunks (``PAGE`` rows of at
most 64 KiB each): a reader of a huge log walks it, it does not load it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from conveyor.orchestrator.store.connector import Connector
from conveyor.orchestrator.store.logchunks import (
    DEFAULT_MAX_BYTES,
    Chunk,
    Kept,
    chunk_of,
    decode,
    encode,
    line_id,
    pack,
)
from conveyor.orchestrator.store.records import LogRecord
from conveyor.orchestrator.store.schema import step_log_chunks as chunks

__all__ = ["DEFAULT_MAX_BYTES", "append", "last_lines", "lines_after"]

#: Chunks read per query: at most about a MiB of text.
PAGE = 16
#: The last chunk of each (step, attempt) among some steps of a run: where appends go on.
_LAST = sa.select(
    chunks.c.id,
    chunks.c.step_key,
    chunks.c.attempt,
    chunks.c.last_line,
    chunks.c.total_bytes,
    chunks.c.dropped_bytes,
).where(
    chunks.c.id.in_(
        sa.select(sa.func.max(chunks.c.id))
        .where(
            chunks.c.instance_id == sa.bindparam("b_run"),
            chunks.c.step_key.in_(sa.bindparam("b_keys", expanding=True)),
        )
        .group_by(chunks.c.step_key, chunks.c.attempt)
        .scalar_subquery()
    )
)
#: The same for one attempt: a walk down the index from its newest chunk.
_LAST_OF_ONE = (
    sa.select(*_LAST.selected_columns)
    .where(
        chunks.c.instance_id == sa.bindparam("b_run"),
        chunks.c.step_key == sa.bindparam("b_key"),
        chunks.c.attempt == sa.bindparam("b_attempt"),
    )
    .order_by(chunks.c.id.desc())
    .limit(1)
)
_INSERT = chunks.insert()
_GROW_MARKER = (
    chunks.update()
    .where(chunks.c.id == sa.bindparam("b_id"))
    .values(last_line=sa.bindparam("b_last_line"), dropped_bytes=sa.bindparam("b_dropped_bytes"))
)

#: (step key, attempt, (stream, text) parts) of one append: a part's text is one or
#: more lines joined by newlines (``logchunks.py``).
Batch = tuple[str, int, Sequence[tuple[str, str]]]


def append(
    conn: sa.Connection, run_id: str, batches: Sequence[Batch], now: datetime, max_bytes: int
) -> None:
    """Append lines to steps' logs in ``conn``'s transaction, each attempt capped."""
    merged: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for key, attempt, lines in batches:
        merged.setdefault((key, attempt), []).extend(lines)
    merged = {k: v for k, v in merged.items() if v}
    if not merged:
        return
    if len(merged) == 1:  # a flush of one attempt: the usual case
        ((key, attempt),) = merged
        params = {"b_run": run_id, "b_key": key, "b_attempt": attempt}
        ends = conn.execute(_LAST_OF_ONE, params).all()
    else:
        keys = sorted({key for key, _ in merged})
        ends = conn.execute(_LAST, {"b_run": run_id, "b_keys": keys}).all()
    last = {(r.step_key, r.attempt): r for r in ends}
    rows: list[dict[str, Any]] = []
    grown: list[dict[str, Any]] = []
    for (key, attempt), lines in merged.items():
        found = last.get((key, attempt))
        before = Kept(found.last_line, found.total_bytes, found.dropped_bytes) if found else Kept()
        appended = pack(before, lines, max_bytes)
        if appended.marker is not None and found is not None:
            marker = appended.marker
            grown.append(
                {
                    "b_id": found.id,
                    "b_last_line": marker.last_line,
                    "b_dropped_bytes": marker.dropped_bytes,
                }
            )
        rows += [_row(run_id, key, attempt, chunk, now) for chunk in appended.chunks]
    if grown:
        conn.execute(_GROW_MARKER, grown)
    if rows:
        conn.execute(_INSERT, rows)


def _row(run_id: str, key: str, attempt: int, chunk: Chunk, now: datetime) -> dict[str, Any]:
    return {
        "instance_id": run_id,
        "step_key": key,
        "attempt": attempt,
        "first_line": chunk.first_line,
        "last_line": chunk.last_line,
        "bytes": chunk.bytes,
        "total_bytes": chunk.total_bytes,
        "dropped_bytes": chunk.dropped_bytes,
        "lines": encode(chunk.parts),
        "created_at": now,
    }


def _chunk(row: sa.RowMapping) -> Chunk:
    return Chunk(
        first_line=row["first_line"],
        last_line=row["last_line"],
        bytes=row["bytes"],
        total_bytes=row["total_bytes"],
        parts=tuple(decode(row["lines"])),
        dropped_bytes=row["dropped_bytes"],
    )


def _records(row: sa.RowMapping, last: int | None = None) -> list[LogRecord]:
    """The chunk's lines as records (only its ``last`` ones, when given)."""
    chunk = _chunk(row)
    if last is None:
        texts, first = chunk.texts(), 0
    else:
        texts = chunk.last_texts(last)
        first = chunk.last_line - chunk.first_line + 1 - len(texts)
        if chunk.dropped_bytes is not None:  # a marker is one line, at place 0
            first = 1 - len(texts)
    key, attempt, created = row["step_key"], row["attempt"], row["created_at"]
    return [
        LogRecord(line_id(row["id"], first + place), key, attempt, stream, text, created)
        for place, (stream, text) in enumerate(texts)
    ]


def _where(run_id: str, step_key: str | None, attempt: int | None) -> list[Any]:
    found: list[Any] = [chunks.c.instance_id == run_id]
    if step_key is not None:
        found.append(chunks.c.step_key == step_key)
    if attempt is not None:
        found.append(chunks.c.attempt == attempt)
    return found


def lines_after(
    store: Connector,
    run_id: str,
    step_key: str | None = None,
    *,
    after_id: int = 0,
    attempt: int | None = None,
) -> Iterator[LogRecord]:
    """Every line after ``after_id``, in order, read a page of chunks at a time."""
    where = _where(run_id, step_key, attempt)
    start, _ = chunk_of(after_id)
    while True:
        query = (
            sa.select(chunks).where(*where, chunks.c.id >= start).order_by(chunks.c.id).limit(PAGE)
        )
        page = store.rows(query)
        for row in page:
            for line in _records(row):
                if line.id > after_id:
                    yield line
        if len(page) < PAGE:
            return
        start = page[-1]["id"] + 1


def last_lines(
    store: Connector, run_id: str, step_key: str, count: int, attempt: int | None = None
) -> list[LogRecord]:
    """The last ``count`` lines of a step's log (of one attempt), oldest first.

    Read from the newest chunk back, down the index, a few chunks at a time: the cost
    is that of the lines asked for, whatever the log's size.
    """
    if count <= 0:
        return []
    where = _where(run_id, step_key, attempt)
    found: list[LogRecord] = []
    before: int | None = None
    size = 1  # most tails fit in the last chunk or two
    while len(found) < count:
        query = sa.select(chunks).where(*where).order_by(chunks.c.id.desc()).limit(size)
        if before is not None:
            query = query.where(chunks.c.id < before)
        page = store.rows(query)
        for row in page:
            found[:0] = _records(row, count - len(found))
            if len(found) >= count:
                break
        if len(page) < size:
            break
        before, size = page[-1]["id"], min(size * 2, PAGE)
    return found
