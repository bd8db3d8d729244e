"""What one host believes about its copy of a run's workspace: ``LocalIndex``.

Kept outside the workspace (a step cannot change it), under a state directory of the
host: ``<state_dir>/<run_id>.manifest`` is the manifest the directory held when this host
last materialised or published it, ``<run_id>.cache`` the SHA-256 of each file keyed by
its size, modification and change times and inode, so a file that did not change is
not read again, and ``<run_id>.tainted`` what steps that failed here left (each path as
the failed step left it, or removed), never to be published from here. Worker processes
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

from .manifest import Entry, Manifest

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
        #: path -> what a failed step left there (None: it removed it); never published.
        self.tainted: dict[str, Entry | None] = {}

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
        try:
            data = Path(f"{self._base}.manifest").read_bytes()
        except FileNotFoundError:
            self.manifest = None
        else:
            self.manifest = Manifest.from_bytes(data)
        try:
            raw = json.loads(Path(f"{self._base}.cache").read_text())
            self.cache = {p: ((v[0], v[1], v[2], v[3]), v[4]) for p, v in raw.items()}
        except (FileNotFoundError, ValueError, TypeError, IndexError, AttributeError):
            self.cache = {}  # lost or unreadable: files are hashed again, nothing worse
        try:
            rows = json.loads(Path(f"{self._base}.tainted").read_text())
            self.tainted = {p: (Entry(*v) if v is not None else None) for p, v in rows.items()}
        except FileNotFoundError:
            self.tainted = {}
        except (ValueError, TypeError, AttributeError):
            raise WorkspaceRefused(
                f"this host's record of failed steps' files of run {self.run_id} is unreadable"
            ) from None

    def save(self) -> None:
        """Write the state (each file replaced at once); call it inside ``locked()``."""
        if self.manifest is None:
            Path(f"{self._base}.manifest").unlink(missing_ok=True)
        else:
            _replace(Path(f"{self._base}.manifest"), self.manifest.to_bytes())
        rows = {p: [*key, digest] for p, (key, digest) in self.cache.items()}
        _replace(Path(f"{self._base}.cache"), json.dumps(rows, separators=(",", ":")).encode())
        tainted = Path(f"{self._base}.tainted")
        if not self.tainted:
            tainted.unlink(missing_ok=True)
        else:
            marks = {
                p: (None if e is None else [e.kind, e.mode, e.digest, e.size, e.target])
                for p, e in self.tainted.items()
            }
            _replace(tainted, json.dumps(marks, separators=(",", ":")).encode())

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
        for suffix in (".manifest", ".cache", ".tainted", ".lock"):
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
