"""A run's events followed live, as server-sent events, until the run ends."""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass

from conveyor.orchestrator.store import SqlStore

from .models import Event
from .streams import Page, sse

#: Events sent per read while following: a long history is sent in slices.
BATCH = 1000


@dataclass
class EventFollow:
    """A run's events as a stream (``streams.Follow``): an ``event`` event for each (its
    ``seq`` as the id), then one ``end`` event once the run has ended."""

    store: SqlStore
    run_id: str
    start: int = 0

    @property
    def key(self) -> Hashable:
        """Followers of the same run share one poll."""
        return ("events", self.run_id)

    def head(self) -> Hashable:
        """The run's status and its last event's number: every change moves one of them."""
        run = self.store.get_run(self.run_id)
        return run.status, run.event_seq

    def page(self, after: int) -> Page:
        """Up to ``BATCH`` events after ``after``, and the end once the run has ended.

        The run's status is read before its events: the transaction that ends a run
        writes its last events, so once it is seen ended, one more read has them all.
        """
        status = self.store.get_run(self.run_id).status
        found = self.store.list_events(self.run_id, after=after)
        more = len(found) > BATCH
        events = []
        for event in found[:BATCH]:
            after = event.seq
            events.append(sse("event", Event.of(event).model_dump_json(), event.seq))
        end = None
        if status.terminal and not more:
            end = sse("end", json.dumps({"status": status.value}))
        return Page("".join(events), after, more, end)
