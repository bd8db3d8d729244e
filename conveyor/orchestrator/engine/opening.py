"""Opening the store a process works on, and failing the runs of embedded processes that died.

Every command that reads the local store (``conveyor runs``, ``show``, ``logs``) goes
through here, so this module imports the store alone: not the runtime, the executor or
the pipeline compiler, which such a command never uses. ``embedded`` holds the lock
files this recovery reads (see its docstring).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.status import RunStatus, StepStatus
from conveyor.orchestrator.store import db
from conveyor.orchestrator.store.sql import SqlStore

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import RunTransaction, Store
    from conveyor.orchestrator.settings import Settings

log = logging.getLogger("conveyor.embedded")
S = StepStatus
#: Where the lock files of the runs embedded processes drive live, under data_dir.
OWNERS_DIR = "owners"
_WAITING = (S.PENDING, S.QUEUED, S.BLOCKED)


def open_store(settings: Settings, *, worker: bool = False) -> SqlStore:
    """The settings' store, ready for use.

    The embedded SQLite file is migrated on first use; any other database must already
    be current (SchemaOutdated: run ``conveyor db upgrade``). A ``worker``'s store does
    no pre-ping: every write a worker makes is retried while the store is unavailable,
    so a pooled connection a Postgres restart killed costs one retry instead of a round
    trip on every transaction.
    """
    store = SqlStore(
        settings.resolved_database_url,
        pre_ping=not worker,
        log_max_bytes=settings.log_max_bytes,
    )
    try:
        if store.is_sqlite and not worker:
            if db.current_revision(store.engine) != db.head_revision():
                store.upgrade()
        else:
            store.ensure_current()
    except BaseException:
        store.close()
        raise
    return store


def owner_name() -> str:
    """How this process names itself as a step's owner (``host:pid``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _abandoned(root: Path) -> Iterator[tuple[str, str]]:
    """(key, owner) of every lock file no live process holds; removed once handled."""
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        leftover = path.name.startswith(".") and path.name.endswith(".tmp")
        if not (path.suffix == ".lock" or leftover):
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # another process handled it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and drives the run
            owner = os.read(fd, 400).decode(errors="replace").strip() or "unknown"
            if path.suffix == ".lock":
                yield path.stem, owner
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def recover_abandoned(
    store: Store, data_dir: Path, cleanup: Callable[[str], None] | None = None
) -> list[str]:
    """Fail the runs whose embedded process died; the ids of the runs it failed.

    Their running steps fail as lost, as the reconciler fails a step whose worker is
    gone for good; steps that waited are cancelled and the run fails, since no process
    is left to run them. ``cleanup(run_id)`` then removes what the run left (its
    workspace), for every abandoned run.
    """
    failed: list[str] = []
    for key, owner in _abandoned(data_dir / OWNERS_DIR):
        run = store.run_by_idempotency_key(key)
        if run is None:  # it died before the run was stored
            continue
        if not run.status.terminal and _fail_lost(store, run.id, owner):
            failed.append(run.id)
        if cleanup is not None:
            try:
                cleanup(run.id)
            except ConveyorError as exc:
                log.warning("could not clean up after run %s: %s", run.id, exc.message)
    return failed


def _fail_lost(store: Store, run_id: str, owner: str) -> bool:
    reason = f"lost: the conveyor process {owner} that ran it ended before the run did"

    def work(tx: RunTransaction) -> bool:
        if tx.run.status.terminal:
            return False
        for step in tx.steps():
            if step.status == S.RUNNING:
                lost = f"lost its worker {step.lease_owner or owner}"
                tx.fail(step, lost, event={"error": lost})
            elif step.status in _WAITING:
                tx.cancel(step, reason)
        tx.move_run(RunStatus.FAILED, error=reason)
        return True

    with store.transaction(run_id) as tx:
        return work(tx)
