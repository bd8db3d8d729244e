"""Followers on the event loop: one shared poll per followed log or run, store reads in a
bounded thread pool, and no thread held while a follower waits.

No follower polls: a ``Watch`` per followed thing reads its cheap ``head`` every poll
interval while anyone follows it, and wakes its followers when it changes. Each follower
asks for the page after the last event it sent (it may be behind the others, or resuming),
and followers at the same point share one read of it. A hundred followers of one busy
step cost one read of its head per interval, plus one read per new page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from conveyor.orchestrator.errors import ConveyorError

from .streams import KEEPALIVE, KEEPALIVE_SECONDS, Follow, Page, error_event

log = logging.getLogger("conveyor.api")
T = TypeVar("T")
#: A head no read returns: the first read of a watch always wakes its followers.
_UNSEEN = object()
#: The head of a watch whose read failed: its followers read, and meet the error.
_FAILED = object()
#: Pages a watch keeps for followers behind the others (each at most LOG_PAGE_BYTES).
SHARED_PAGES = 8


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
        #: How many times the head changed: pages read since the last change are shared.
        self.version = 0
        self.pages: OrderedDict[tuple[int, int], asyncio.Future[Page]] = OrderedDict()
        self.followers = 0
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Wake every follower waiting on the current event."""
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def page(self, after: int, version: int) -> Page:
        """The page after ``after``, read once for every follower at that point.

        A page read since the head was at ``version`` is an answer for every follower
        that took ``version`` (and its ``changed`` event) before asking: whatever was
        written after the read changes the head again and wakes them. So followers that
        start together, or that keep up, share one read per page instead of one each.
        """
        key = (after, version)
        found = self.pages.get(key)
        if found is None:
            found = asyncio.ensure_future(self.reader.run(self.follow.page, after))
            found.add_done_callback(lambda done: self._forget_failed(key, done))
            self.pages[key] = found
            while len(self.pages) > SHARED_PAGES:
                self.pages.popitem(last=False)
        else:
            self.pages.move_to_end(key)
        # Shielded: a follower that leaves does not cancel the read the others wait for.
        return await asyncio.shield(found)

    def _forget_failed(self, key: tuple[int, int], done: asyncio.Future[Page]) -> None:
        if (done.cancelled() or done.exception() is not None) and self.pages.get(key) is done:
            del self.pages[key]  # the next follower reads again

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
            changed, version = watch.changed, watch.version
            try:
                page = await watch.page(after, version)
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
