"""Worker hosts: where a run's next step goes to find its workspace already there.

A host is a data directory (``CONVEYOR_DATA_DIR``): worker processes that share one are
one host and share its copies of runs' workspaces. Unless workspaces are shared by
every host (``CONVEYOR_WORKSPACE_SHARED``), each worker also consumes one queue per
queue it serves, for its host only (``sandbox.host.<host id>``), and says so in the
database at every heartbeat while it lives (``worker_hosts``). The dispatcher sends a
step that opens sandboxes to the host holding its run's newest workspace when that
host serves the step's queue and was seen lately, and to the shared queue otherwise;
brief steps, which never open a workspace, always go to the shared queue. A message
left on the queue of a host that went away is sent again to the shared queue by the
reconciler (``StepRef.anywhere``).

The same worker main process removes the workspaces of runs that are over from its
host (a run's last step removes its copy where it ran; other hosts' copies go here).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from celery import Celery, signals

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.workspace import host_id
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import SqlStore
from conveyor.orchestrator.workspaces.index import LocalIndex

log = logging.getLogger("conveyor.workers.hosts")

#: The infix of a host's own queues: ``<queue>.host.<host id>``.
HOST_INFIX = ".host."
#: A host not heard of for this many announcements (one per heartbeat) gets no step
#: sent to its own queues.
LIVE_ANNOUNCEMENTS = 3
#: How often a worker looks for workspaces of runs that are over on its host.
SWEEP_SECONDS = 60.0
#: How long the dispatcher trusts what it read of the live hosts and of a run's head.
ROUTES_TTL = 1.0
#: Runs whose head host the dispatcher remembers at most.
HEADS_KEPT = 4096


def host_queue(queue: str, host: str) -> str:
    """The queue of ``queue``'s steps meant for ``host``."""
    return f"{queue}{HOST_INFIX}{host}"


def served_queues(names: Collection[str]) -> frozenset[str]:
    """The shared queues among a worker's queue names (its host's own left out)."""
    return frozenset(n for n in names if HOST_INFIX not in n)


def live_seconds(settings: Settings) -> float:
    """How long since its last announcement a host counts as alive."""
    return LIVE_ANNOUNCEMENTS * settings.heartbeat_seconds + 1.0


def handing_over(settings: Settings) -> bool:
    """True when hosts keep their own copies of workspaces (nothing is shared)."""
    return not settings.workspace_shared


class HostRouter:
    """Picks the queue a step message goes to: its host's, or the shared one."""

    def __init__(self, store: SqlStore, settings: Settings) -> None:
        self.store = store
        self.live_seconds = live_seconds(settings)
        self._live: dict[str, frozenset[str]] = {}
        self._heads: dict[str, tuple[float, str | None]] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def queue_for(self, ref: StepRef, brief: bool) -> str:
        """``ref.queue``, or its host's queue when the run's workspace is on a live host
        that serves it. Never raises: a route is only a preference."""
        if ref.anywhere or brief:
            return ref.queue
        try:
            host = self._head_host(ref.run_id)
            if host and host in self._hosts(ref.queue):
                return host_queue(ref.queue, host)
        except Exception:  # the shared queue always works
            log.debug("no host route for step %s", ref.step_key, exc_info=True)
        return ref.queue

    def _head_host(self, run_id: str) -> str | None:
        """The host of the run's newest workspace, read at most once per TTL per run (a
        fan-out's steps are sent together)."""
        now = time.monotonic()
        with self._lock:
            known = self._heads.get(run_id)
        if known is not None and now - known[0] <= ROUTES_TTL:
            return known[1]
        head = self.store.workspace_head(run_id)
        host = head.host if head is not None else None
        with self._lock:
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            self._heads[run_id] = (now, host)
        return host

    def _hosts(self, queue: str) -> frozenset[str]:
        with self._lock:
            if time.monotonic() - self._read_at > ROUTES_TTL:
                since = utcnow() - timedelta(seconds=self.live_seconds)
                self._live = self.store.live_hosts(since)
                self._read_at = time.monotonic()
            return self._live.get(queue, frozenset())


class HostAnnouncer:
    """A worker main process's thread: says which queues its host serves, and removes
    the host's copies of workspaces of runs that are over."""

    def __init__(self, settings: Settings, host: str, queues: Collection[str]) -> None:
        self.settings, self.host, self.queues = settings, host, frozenset(queues)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: SqlStore | None = None

    def start(self) -> None:
        """Start announcing (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="conveyor-host-announcer", daemon=True
            )
            self._thread.start()

    def stop(self, *_: Any, **__: Any) -> None:
        """Stop, and withdraw the host's queues: no new step is sent to them."""
        self._stop.set()
        with contextlib.suppress(Exception):
            self._open().withdraw_host(self.host, self.queues)

    def _open(self) -> SqlStore:
        if self._store is None:
            from conveyor.workers.process import open_current_store  # noqa: PLC0415

            self._store = open_current_store(self.settings)
        return self._store

    def _loop(self) -> None:
        next_sweep = time.monotonic() + min(SWEEP_SECONDS, 5.0)
        while not self._stop.is_set():
            try:
                self._open().announce_host(self.host, self.queues)
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + SWEEP_SECONDS
            except Exception as exc:  # the database is away: say it again next time
                log.warning("host %s could not announce its queues: %s", self.host, exc)
            self._stop.wait(self.settings.heartbeat_seconds)

    def sweep(self) -> int:
        """Remove this host's workspaces of runs that are over; how many went."""
        root = self.settings.workspace_root
        state = self.settings.data_dir / "workspace-state"
        try:
            names = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except FileNotFoundError:
            return 0
        ended = self._open().runs_ended(names)
        for run_id in ended:
            shutil.rmtree(root / run_id, ignore_errors=True)
            with contextlib.suppress(ConveyorError, OSError):
                LocalIndex(state, run_id).forget()
        return len(ended)


def serve_host_queues(app: Celery, settings: Settings) -> None:
    """Make each worker of ``app`` consume its host's own queues and announce them."""
    if not handing_over(settings):
        return

    def after_setup(sender: Any, instance: Any, **_: Any) -> None:
        host = host_id(settings.data_dir)
        queues = served_queues(instance.app.amqp.queues.consume_from or ())
        for queue in sorted(queues):
            instance.app.amqp.queues.select_add(host_queue(queue, host))
        announcer = HostAnnouncer(settings, host, queues)
        signals.worker_ready.connect(
            lambda **__: announcer.start(), weak=False, dispatch_uid="conveyor-host-ready"
        )
        signals.worker_shutting_down.connect(
            announcer.stop, weak=False, dispatch_uid="conveyor-host-withdraw"
        )

    signals.celeryd_after_setup.connect(
        after_setup, weak=False, dispatch_uid="conveyor-host-queues"
    )
