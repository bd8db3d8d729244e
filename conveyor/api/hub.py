"""Followers on the event loop: one shared poll per followed log or run, store reads in a
bounded thread pool, and no thread held while a follower waits.

Each follower reads its own pages (it may be behind the others, or resuming), but none
of them polls: a ``Watch`` per followed thing reads its cheap ``head`` every poll interval
while anyone follows it, and wakes its followers when it changes. A hundred followers of
one busy step cost one read per interval, plus one page each when something came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from conveyor.orchestrator.errors import ConveyorError

from .streams import KEEPALIVE, KEEPALIVE_SECONDS, Follow, error_event

log = logging.getLogger("conveyor.api")
T = TypeVar("T")
#: A head no read returns: the first read of a watch always wakes its followers.
_UNSEEN = object()
#: The head of a watch whose read failed: its followers read, and meet the error.
_FAILED = object()


class Reader:
    """Store reads for streams, on a thread pool of their own.

    Its own pool: followers never take the threads that answer other requests, and a
    burst of followers waits for a thread instead of opening a connection each.
    """

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="conveyor-stream")

    async def run(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)`` in the pool; the event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, read, *args)

    def close(self) -> None:
        """Stop the pool; a read under way ends on its own."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class Watch:
    """The shared poll of one followed thing, while it has followers."""

    def __init__(self, follow: Follow, reader: Reader, poll: float) -> None:
        self.follow, self.reader, self.poll = follow, reader, poll
        #: Set (and replaced) whenever the head changed: a follower takes it before it
        #: reads, so a change after its read always wakes it.
        self.changed = asyncio.Event()
        self.followers = 0
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Wake every follower waiting on the current event."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def run(self) -> None:
        """Read the head every ``poll`` seconds; wake the followers when it changed."""
        last: object = _UNSEEN
        while True:
            try:
                head: object = await self.reader.run(self.follow.head)
            except ConveyorError:
                head = _FAILED
            except Exception:  # a poll must not die silently and leave followers asleep
                log.exception("stream poll failed")
                head = _FAILED
            if head != last:
                last = head
                self.wake()
            await asyncio.sleep(self.poll)


class Hub:
    """The watches of everything followed in this process."""

    def __init__(self, reader: Reader, poll: float) -> None:
        self.reader, self.poll = reader, poll
        self.watches: dict[Hashable, Watch] = {}
        self.closed = False

    @contextlib.asynccontextmanager
    async def watching(self, follow: Follow) -> AsyncIterator[Watch]:
        """The watch of ``follow``'s key, started for the first follower and stopped
        when the last one leaves."""
        watch = self.watches.get(follow.key)
        if watch is None:
            watch = self.watches[follow.key] = Watch(follow, self.reader, self.poll)
            watch.task = asyncio.get_running_loop().create_task(watch.run())
        watch.followers += 1
        try:
            yield watch
        finally:
            watch.followers -= 1
            if watch.followers == 0 and self.watches.get(follow.key) is watch:
                del self.watches[follow.key]
                if watch.task is not None:
                    watch.task.cancel()

    def close(self) -> None:
        """End every stream now (the server is stopping); followers reconnect elsewhere."""
        self.closed = True
        for watch in self.watches.values():
            watch.wake()


async def follow_stream(follow: Follow, hub: Hub) -> AsyncGenerator[str, None]:
    """The SSE text of ``follow``, as ``streams.sync_events`` writes it, read on the hub."""
    loop = asyncio.get_running_loop()
    async with hub.watching(follow) as watch:
        after, quiet_since = follow.start, loop.time()
        while not hub.closed:
            changed = watch.changed
            try:
                page = await hub.reader.run(follow.page, after)
            except ConveyorError as exc:  # the headers are sent: the error goes in the stream
                yield error_event(exc)
                return
            after = page.after
            if page.text:
                quiet_since = loop.time()
                yield page.text
            if page.more:
                continue
            if page.end is not None:
                yield page.end
                return
            if loop.time() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = loop.time()
                yield KEEPALIVE
            quiet_left = KEEPALIVE_SECONDS - (loop.time() - quiet_since)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(quiet_left, 0.0))
