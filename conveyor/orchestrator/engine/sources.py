"""A run's source code: copied into its workspace before its first step starts.

``conveyor run FILE --source DIR`` copies DIR into the new run's workspace, the way a
CI system checks out the repository before the first job. What a checkout would not
bring is skipped (``.git``, ``.conveyor``, ``.venv``, ``__pycache__``, and the data
directory itself when it lies inside DIR); symbolic links are copied as links, never
followed, and special files (pipes, sockets, devices) are left out.

The run must exist before its workspace can be named, and creating it dispatches its
first steps: :class:`HeldDispatches` keeps those back until the copy is complete.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from conveyor.orchestrator.contracts import Dispatcher, StepRef
from conveyor.orchestrator.errors import ConveyorError

#: Names never copied, at any depth: version control, Conveyor's data, caches.
SKIPPED = frozenset({".git", ".conveyor", ".venv", "__pycache__"})


def copy_source(source: Path, dest: Path, *, exclude: Iterable[Path] = ()) -> int:
    """Copy the directory ``source`` into ``dest``; how many files and links it copied."""
    root = source.resolve()
    if not root.is_dir():
        raise ConveyorError(f"source {source} is not a directory")
    excluded = {path.resolve() for path in exclude}
    copied = 0

    def ignore(directory: str, names: list[str]) -> set[str]:
        nonlocal copied
        skipped = {name for name in names if _skipped(Path(directory, name), excluded)}
        copied += len([name for name in names if name not in skipped])
        return skipped

    try:
        shutil.copytree(root, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    except shutil.Error as exc:
        first = exc.args[0][0] if exc.args and exc.args[0] else ("", "", str(exc))
        raise ConveyorError(f"could not copy the source {source}: {first[2]}") from None
    except OSError as exc:
        raise ConveyorError(f"could not copy the source {source}: {exc}") from None
    return copied


def _skipped(path: Path, excluded: set[Path]) -> bool:
    if path.name in SKIPPED:
        return True
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return False  # a link is copied as a link: what it names is never read
    if stat.S_ISDIR(mode):
        return path.resolve() in excluded
    return not stat.S_ISREG(mode)  # reading a pipe would block the copy for ever


class HeldDispatches:
    """A dispatcher that can hold back one run's steps until its workspace is ready.

    ``hold()`` holds every dispatch while a run is being created; ``keep(run_id)``
    then lets every other run's through and keeps holding that one's until
    ``release(run_id)`` (or ``drop(run_id)`` when the run will not go ahead).
    """

    def __init__(self, inner: Dispatcher) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._holding_all = False
        self._held: dict[str, list[tuple[StepRef, datetime | None]]] = {}
        self._kept: set[str] = set()

    def dispatch(self, ref: StepRef, eta: datetime | None = None) -> None:
        """Pass ``ref`` on, unless its run (or every run, for now) is held."""
        with self._lock:
            if self._holding_all or ref.run_id in self._kept:
                self._held.setdefault(ref.run_id, []).append((ref, eta))
                return
        self._inner.dispatch(ref, eta)

    def hold(self) -> None:
        """Hold every dispatch from now on (a run is being created)."""
        with self._lock:
            self._holding_all = True

    def keep(self, run_id: str | None) -> None:
        """Stop holding everything; go on holding ``run_id``'s steps only."""
        with self._lock:
            self._holding_all = False
            if run_id is not None:
                self._kept.add(run_id)
            others = [
                item for key, items in self._held.items() if key not in self._kept for item in items
            ]
            self._held = {key: items for key, items in self._held.items() if key in self._kept}
        self._send(others)

    def release(self, run_id: str) -> None:
        """Send what was held for ``run_id`` and stop holding it."""
        self._send(self._forget(run_id))

    def drop(self, run_id: str) -> None:
        """Forget what was held for ``run_id`` (it was cancelled: nothing is left to run)."""
        self._forget(run_id)

    def _forget(self, run_id: str) -> list[tuple[StepRef, datetime | None]]:
        with self._lock:
            self._kept.discard(run_id)
            return self._held.pop(run_id, [])

    def _send(self, items: list[tuple[StepRef, datetime | None]]) -> None:
        for ref, eta in items:
            self._inner.dispatch(ref, eta)
