"""What one host believes about its copy of a run's workspace: ``LocalIndex``.

Kept outside the workspace (a step cannot change it), under a state directory of the
host: ``<state_dir>/<run_id>.manifest`` is the manifest the directory held when this host
last materialised or published it, ``<run_id>.cache`` the SHA-256 of each file keyed by
its size, modification and change times and inode, so a file that did not change is
not read again. Worker processes
of one host share it: ``locked()`` holds an exclusive ``flock`` on ``<run_id>.lock`` for
each read-modify-write. ``<run_id>.active/`` holds one file per step of the run using
the workspace on this host (named with its process id), so a host knows whether a step
of the run other than the caller still runs here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conveyor.orchestrator.errors import WorkspaceRefused

from .manifest import Manifest

#: What a file's digest is trusted by: size, mtime_ns, inode, ctime_ns.
StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    """The part of a file's status that changes whenever its content may have."""
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class LocalIndex:
    """One run's workspace state on this host (see the module)."""

    def __init__(self, state_dir: Path, run_id: str) -> None:
        if not run_id or "/" in run_id or run_id.startswith(".") or "\x00" in run_id:
            raise WorkspaceRefused(f"run id {run_id!r} cannot name a workspace")
        self.state_dir = state_dir
        self.run_id = run_id
        #: The manifest the directory holds as far as the store knows; None: never held.
        self.manifest: Manifest | None = None
        #: path -> (stat key, SHA-256) of the files last hashed or written here.
        self.cache: dict[str, tuple[StatKey, str]] = {}
        #: What each state file holds as last read or written (None: no file).
        self._written: dict[str, bytes | None] = {}

    @property
    def _base(self) -> Path:
        return self.state_dir / self.run_id

    @contextlib.contextmanager
    def locked(self) -> Iterator[LocalIndex]:
        """Hold the run's lock on this host, with the state read afresh; ``save`` within."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self._base}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._load()
            yield self
        finally:
            os.close(fd)  # releases the lock

    def _load(self) -> None:
        self._written = {}
        try:
            data = Path(f"{self._base}.manifest").read_bytes()
        except FileNotFoundError:
            self.manifest = None
            self._written["manifest"] = None
        else:
            self.manifest = Manifest.from_bytes(data)
            self._written["manifest"] = data
        try:
            text = Path(f"{self._base}.cache").read_bytes()
            raw = json.loads(text)
            self.cache = {p: ((v[0], v[1], v[2], v[3]), v[4]) for p, v in raw.items()}
            self._written["cache"] = text
        except (FileNotFoundError, ValueError, TypeError, IndexError, AttributeError):
            self.cache = {}  # lost or unreadable: files are hashed again, nothing worse

    def save(self) -> None:
        """Write the state (each file replaced at once, and only if it changed); call it
        inside ``locked()``."""
        self._put("manifest", None if self.manifest is None else self.manifest.to_bytes())
        rows = {p: [*key, digest] for p, (key, digest) in self.cache.items()}
        self._put("cache", json.dumps(rows, separators=(",", ":")).encode())

    def _put(self, suffix: str, data: bytes | None) -> None:
        if suffix in self._written and self._written[suffix] == data:
            return  # as it is on disk: a step that changed nothing writes nothing
        path = Path(f"{self._base}.{suffix}")
        if data is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, data)
        self._written[suffix] = data

    def enter(self, token: str) -> Path:
        """Mark a step of the run as using the workspace here (``others`` sees it)."""
        folder = Path(f"{self._base}.active")
        folder.mkdir(parents=True, exist_ok=True)
        mark = folder / f"{token}.{os.getpid()}"
        mark.touch()
        return mark

    def others(self, mine: Path | None = None) -> bool:
        """True when a step of the run other than ``mine`` uses the workspace here (a
        mark whose process is gone does not count, and is removed)."""
        try:
            marks = list(Path(f"{self._base}.active").iterdir())
        except FileNotFoundError:
            return False
        found = False
        for mark in marks:
            if mine is not None and mark == mine:
                continue
            pid = mark.name.rsplit(".", 1)[-1]
            if pid.isdigit() and _alive(int(pid)):
                found = True
            else:
                mark.unlink(missing_ok=True)
        return found

    def forget(self) -> None:
        """Remove the run's state on this host (its workspace went with the run)."""
        for suffix in (".manifest", ".cache", ".lock"):
            Path(f"{self._base}{suffix}").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            for mark in Path(f"{self._base}.active").iterdir():
                mark.unlink(missing_ok=True)
            Path(f"{self._base}.active").rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
