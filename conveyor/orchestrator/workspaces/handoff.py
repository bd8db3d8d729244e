"""Handing a run's workspace between hosts: ``WorkspaceHandoff.prepare`` and ``publish``.

Before a step that uses the workspace runs, ``prepare`` brings this host's copy to the
run's head (the newest manifest, named by the store's ``WorkspaceHeads``), fetching only
the files this host lacks. After it succeeds, ``publish`` records what the step changed
relative to that baseline, uploads the contents the artifact store lacks, and moves the
head by compare-and-set to the head with those changes applied, re-reading and
re-applying when another step moved it first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from conveyor.orchestrator.contracts.artifacts import WorkspaceBlobs
from conveyor.orchestrator.contracts.store import WorkspaceHeads
from conveyor.orchestrator.errors import ArtifactNotFound, ConveyorError, WorkspaceRefused

from .index import LocalIndex, StatKey, stat_key
from .local import THREADS, Inside, MaterialiseStats, SnapshotStats, materialise, snapshot
from .manifest import Changes, Manifest, Place, apply, diff
from .packs import PACK_MIN, PACKED_MAX, Content, batches, write_pack

#: Tries at moving the head before giving up (each after another step moved it).
TRIES = 50

T = TypeVar("T")


@dataclass(frozen=True)
class Baseline:
    """What a step started from: the manifest its workspace held, and the head it was."""

    manifest: Manifest
    #: The head's digest (None: no step of the run had published yet).
    head: str | None
    fetched: MaterialiseStats = field(default_factory=MaterialiseStats)


@dataclass
class PublishStats:
    """What publishing a step's workspace changes took."""

    changed: int = 0
    removed: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    #: Files changed whose content the store held already (the same bytes elsewhere).
    files_stored_already: int = 0
    #: Files read and hashed (those unchanged since last time come from the cache).
    files_hashed: int = 0
    #: Pipes, sockets and devices left out.
    skipped: list[str] = field(default_factory=list)
    #: The head after publishing (None: nothing changed, nothing written).
    head: str | None = None
    tries: int = 0
    seconds: float = 0.0


class WorkspaceHandoff:
    """One host's side of the workspaces of runs under ``root`` (``root/<run_id>``)."""

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        blobs: Callable[[], WorkspaceBlobs],
        heads: WorkspaceHeads,
        host: str,
    ) -> None:
        self.root = root
        self.state_dir = state_dir
        self._blobs = blobs
        self.heads = heads
        self.host = host

    def workspace(self, run_id: str) -> Path:
        """The run's workspace on this host."""
        return self.root / run_id

    def prepare(self, run_id: str) -> Baseline:
        """Bring this host's copy of the run's workspace to the run's head.

        Before any step published, nothing is fetched and the baseline is empty: the
        first step to publish carries what the directory held before it (a seeded
        source) along with its own changes, so other hosts get it too.
        """
        head = self.heads.workspace_head(run_id)
        index = LocalIndex(self.state_dir, run_id)
        with index.locked():
            if head is None:
                if index.manifest is None:
                    index.manifest = Manifest()
                    index.save()
                return Baseline(Manifest(), None)
            if not self.workspace(run_id).is_dir():
                index.manifest = Manifest()  # removed here since (the run ended before)
            elif index.manifest is not None and index.manifest.digest == head.digest:
                return Baseline(index.manifest, head.digest)
            target = self._manifest(run_id, head.digest)
            stats = materialise(self.workspace(run_id), target, self._blobs(), index, run_id)
            index.save()
        return Baseline(target, head.digest, stats)

    def publish(self, run_id: str, baseline: Baseline) -> PublishStats:
        """Record what the step changed since ``baseline`` as the run's new head."""
        started = time.perf_counter()
        stats = PublishStats()
        seen = SnapshotStats()
        root, now, keys, changes = self._changes(run_id, baseline, seen)
        index = LocalIndex(self.state_dir, run_id)
        stats.files_hashed, stats.skipped = seen.hashed, seen.skipped
        stats.changed, stats.removed = len(changes.set), len(changes.removed)
        if not changes:
            stats.seconds = time.perf_counter() - started
            return stats
        held = baseline.manifest.packed  # contents the store holds in packs already
        changes.packed.update(
            {e.digest: held[e.digest] for e in changes.files.values() if e.digest in held}
        )
        store = self._blobs()
        self._upload(store, run_id, root, changes, now, keys, stats)
        stats.head = self._move_head(store, run_id, baseline, changes, stats)
        with index.locked():
            index.manifest = apply(index.manifest or Manifest(), changes)
            index.save()
        stats.seconds = time.perf_counter() - started
        return stats

    def _changes(
        self, run_id: str, baseline: Baseline, seen: SnapshotStats | None = None
    ) -> tuple[Path, Manifest, dict[str, StatKey], Changes]:
        """The workspace's root, what it holds now, each file's stat key (as hashed), and
        what changed since ``baseline``."""
        root = self.workspace(run_id)
        index = LocalIndex(self.state_dir, run_id)
        with index.locked():
            now = snapshot(root, index, seen)
            index.save()
        keys = {path: key for path, (key, _) in index.cache.items()}
        return root, now, keys, diff(baseline.manifest, now)

    def _upload(
        self,
        store: WorkspaceBlobs,
        run_id: str,
        root: Path,
        changes: Changes,
        now: Manifest,
        keys: dict[str, StatKey],
        stats: PublishStats,
    ) -> None:
        by_digest: dict[str, str] = {}
        for path, entry in changes.files.items():
            by_digest.setdefault(entry.digest, path)
        asked = [d for d in by_digest if d not in changes.packed]  # in a pack: stored
        missing = _store_call(lambda: store.missing_blobs(run_id, asked)) if asked else set()
        stats.files_stored_already = len(by_digest) - len(missing)
        small = [d for d in missing if now[by_digest[d]].size < PACKED_MAX]
        if len(small) < PACK_MIN:  # a few contents: each a blob of its own
            small = []
        packed = sorted(
            (Content(d, now[by_digest[d]].size, by_digest[d]) for d in small), key=_path
        )
        loose = sorted(missing.difference(small), key=lambda d: -now[by_digest[d]].size)
        inside = Inside(root)

        def upload(digest: str) -> dict[str, Place]:
            path = by_digest[digest]
            with _opened(root, path, now[path].size, keys.get(path)) as src:
                _store_call(lambda: store.put_blob(run_id, digest, src))
            return {}

        def read(content: Content) -> bytes:
            return inside.read(content.path, content.size, keys.get(content.path))

        # The largest first, packs of many small files among them: one pool for all.
        tasks: list[Callable[[], dict[str, Place]]] = [
            *(partial(upload, d) for d in loose),
            *(partial(write_pack, store, run_id, batch, read) for batch in batches(packed)),
        ]
        try:
            with ThreadPoolExecutor(THREADS, thread_name_prefix="conveyor-upload") as pool:
                for placed in pool.map(lambda task: task(), tasks):
                    changes.packed.update(placed)
        finally:
            inside.close()
        stats.files_uploaded += len(missing)
        stats.bytes_uploaded += sum(now[by_digest[d]].size for d in missing)

    def _move_head(
        self,
        store: WorkspaceBlobs,
        run_id: str,
        baseline: Baseline,
        changes: Changes,
        stats: PublishStats,
    ) -> str:
        for attempt in range(TRIES):
            stats.tries = attempt + 1
            head = self.heads.workspace_head(run_id)
            if head is None:
                base = Manifest()
            elif head.digest == baseline.head:
                base = baseline.manifest
            else:
                base = self._manifest(run_id, head.digest)
            new = apply(base, changes)
            expected = head.digest if head is not None else None
            if new.digest == expected:
                return new.digest  # the head holds these changes already
            _store_call(partial(store.put_manifest, run_id, new.digest, new.to_bytes()))
            if self.heads.move_workspace_head(run_id, expected, new.digest, self.host):
                return new.digest
            time.sleep(random.uniform(0.001, 0.01 * (attempt + 1)))  # noqa: S311
        raise WorkspaceRefused(
            f"the run's workspace head moved {TRIES} times while this step published its files"
        )

    def _manifest(self, run_id: str, digest: str) -> Manifest:
        try:
            data = self._blobs().get_manifest(run_id, digest)
        except ArtifactNotFound:
            raise WorkspaceRefused(
                f"workspace manifest {digest} is missing from the artifact store"
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise WorkspaceRefused(f"workspace manifest {digest} does not match its digest")
        return Manifest.from_bytes(data)

    def forget(self, run_id: str) -> None:
        """Drop this host's state of the run (its workspace is removed by the caller)."""
        LocalIndex(self.state_dir, run_id).forget()

    def remove(self, run_id: str) -> int:
        """Remove the run's handed-over workspace everywhere it is kept: the head first
        (no step fetches it any more), then its blobs and manifests, then this host's
        state. How many blobs and manifests went."""
        self.heads.forget_workspace(run_id)
        count = _store_call(lambda: self._blobs().delete_workspace(run_id))
        self.forget(run_id)
        return count

    # -- steps using the workspace here, and those that fail ------------------------

    def enter(self, run_id: str) -> Path:
        """Mark a step of the run as using this host's copy (before ``prepare``)."""
        return LocalIndex(self.state_dir, run_id).enter(uuid.uuid4().hex)

    def leave(self, mark: Path) -> None:
        """The step marked ``mark`` no longer uses this host's copy."""
        mark.unlink(missing_ok=True)

    def publish_first(self, run_id: str, baseline: Baseline) -> Baseline:
        """Publish what the directory holds before any step ran (the run's source) as the
        run's first head; if another host did so first, bring this copy to its head.

        Only ever from no head to the first: the source is the start of the run's
        history, never laid over a later head (that would undo what steps changed).
        """
        root, now, keys, changes = self._changes(run_id, baseline)
        if not changes:
            return baseline
        store = self._blobs()
        self._upload(store, run_id, root, changes, now, keys, PublishStats())
        index = LocalIndex(self.state_dir, run_id)
        first = apply(baseline.manifest, changes)
        _store_call(partial(store.put_manifest, run_id, first.digest, first.to_bytes()))
        with index.locked():
            # What the directory holds is known either way: the next step's baseline.
            index.manifest = now
            index.save()
        if self.heads.move_workspace_head(run_id, None, first.digest, self.host):
            return Baseline(now, first.digest)
        return self.prepare(run_id)

    def discard(self, run_id: str, mark: Path | None) -> bool:
        """The step that held ``mark`` did not succeed: nothing it changed is published.

        When no other step of the run uses this host's copy, the copy is brought back
        to the run's head at once (what the step wrote goes, what it removed or changed
        comes back), so no later step sees it. With another step running here, the two
        shared the directory, and the copy is left as it is (that step's files cannot be
        told from this one's). True when the copy was brought back.
        """
        root = self.workspace(run_id)
        index = LocalIndex(self.state_dir, run_id)
        with index.locked():
            if index.others(mark) or not root.is_dir():
                return False
            head = self.heads.workspace_head(run_id)
            target = Manifest() if head is None else self._manifest(run_id, head.digest)
            index.manifest = snapshot(root, index)
            materialise(root, target, self._blobs(), index, run_id)
            index.save()
        return True


def _path(content: Content) -> str:
    return content.path


def _store_call(call: Callable[[], T]) -> T:
    """Call the artifact store; its errors fail the step in one line."""
    try:
        return call()
    except WorkspaceRefused:
        raise
    except ConveyorError as exc:
        raise WorkspaceRefused(f"the workspace could not be stored: {exc.message}") from None


_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@contextlib.contextmanager
def _opened(root: Path, path: str, size: int, key: StatKey | None) -> Iterator[Path]:
    """A name for the file ``path`` that cannot lead anywhere else (no link on the way).

    The file is opened without following links; the store reads it through
    ``/proc/self/fd`` where there is one, so a link put in its place since the snapshot
    is never followed out of the workspace.
    """
    fd = _open_inside(root, path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size or key not in (None, stat_key(st)):
            raise WorkspaceRefused(f"{path!r} changed while it was being published")
        proc = Path(f"/proc/self/fd/{fd}")
        yield proc if proc.exists() else root / path
        if stat_key(os.fstat(fd)) != stat_key(st):
            raise WorkspaceRefused(f"{path!r} changed while it was being published")
    finally:
        os.close(fd)


def _open_inside(root: Path, path: str) -> int:
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        *parents, name = path.split("/")
        for part in parents:
            try:
                step = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except OSError:
                raise WorkspaceRefused(f"{path!r} changed while it was being published") from None
            os.close(dir_fd)
            dir_fd = step
        try:
            return os.open(name, _READ, dir_fd=dir_fd)
        except OSError:
            raise WorkspaceRefused(f"{path!r} changed while it was being published") from None
    finally:
        os.close(dir_fd)
