"""Artifact retention: a finished run's artifacts go once its pipeline's retention has passed.

A run keeps the retention of the pipeline version it executed (``artifacts: {retention:
30d}`` in its definition), else the operator's ``CONVEYOR_ARTIFACT_RETENTION``; with
neither, or with ``forever``, nothing is deleted. The sweep deletes through the
ArtifactStore's ``delete_run`` inside a transaction holding the run's lock, so a run
that is going (or being retried right now) is never touched, and records
``artifacts.expired`` on the run: the next sweep finds that event and leaves the run
alone. A run retried and finished again after that counts from its new end.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from conveyor.orchestrator.artifacts.models import Artifact
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import ArtifactStore, Store
from conveyor.orchestrator.durations import format_duration
from conveyor.orchestrator.errors import (
    ArtifactError,
    ArtifactExpired,
    ArtifactNotFound,
    ConveyorError,
    PluginError,
    SpecError,
)
from conveyor.orchestrator.pipeline.spec import parse
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.definitions import Definitions
from conveyor.orchestrator.store.retention import expirable_runs
from conveyor.orchestrator.store.sql import SqlStore

log = logging.getLogger("conveyor.retention")

EXPIRED = "artifacts.expired"
#: Only a definition whose text holds this word can set a retention: the others are
#: never parsed, so a sweep over thousands of pipeline versions stays one query.
MARKER = "retention"
_UNSET = object()
_DAY = 86400.0


@dataclass(frozen=True)
class Expiry:
    """When a run's artifacts were deleted, how many, and after how long."""

    at: datetime
    count: int
    retention: float


class _Group(NamedTuple):
    """The runs one retention applies to, by the definition version they executed."""

    retention: float
    #: These versions' runs (None: any version's) ...
    only: list[str] | None
    #: ... but not these versions' runs.
    besides: list[str]


def describe(seconds: float) -> str:
    """``30d``, ``12h`` or ``90s``: a retention as people write it."""
    for unit, size in (("d", _DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return format_duration(seconds) if seconds >= 60 else f"{seconds:g}s"


class ArtifactRetention:
    """Deletes the artifacts of runs that ended longer ago than their retention."""

    def __init__(
        self,
        store: SqlStore,
        artifacts: Callable[[], ArtifactStore],
        default: float | None,
        *,
        every: float = 300.0,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.definitions = Definitions(store)
        #: Made on first use: a sweep with nothing to delete never needs the store.
        self.artifacts = artifacts
        self.default = default
        self.every = timedelta(seconds=every)
        self.batch = batch
        self._policies: dict[str, Any] = {}
        self._last: datetime | None = None

    @classmethod
    def from_settings(
        cls, store: SqlStore, settings: Settings, artifacts: Callable[[], ArtifactStore]
    ) -> ArtifactRetention:
        """The retention the operator configured, deleting through ``artifacts``."""
        return cls(store, functools.cache(artifacts), settings.artifact_retention)

    def due(self, now: datetime) -> bool:
        """True when the last sweep (of this process) is ``every`` seconds old or more.

        Retentions are hours or days: sweeping at every reconciler pass would only
        repeat the same queries.
        """
        return self._last is None or now - self._last >= self.every

    def sweep(self, now: datetime | None = None) -> int:
        """Delete what is due (up to ``batch`` runs); how many runs lost their artifacts.

        A sweep that stopped at ``batch`` is due again at once: a backlog (retention just
        turned on) drains at the reconciler's pace, a batch per pass.
        """
        now = now or utcnow()
        self._last, done = now, 0
        try:
            for group in self._groups():
                for run_id in self._candidates(group, now):
                    done += self._expire_one(run_id, group.retention, now)
                    if done >= self.batch:
                        self._last = None
                        return done
        except PluginError as exc:  # no artifact store here: say so once per sweep
            log.warning("artifact retention skipped: %s", exc.message)
        return done

    # -- which runs ------------------------------------------------------------------

    def _groups(self) -> Iterator[_Group]:
        """One group per retention value pipelines set, then the default's group."""
        explicit = self._explicit()
        by_value: dict[float, list[str]] = defaultdict(list)
        for definition_id, seconds in explicit.items():
            if seconds is not None:  # forever
                by_value[seconds].append(definition_id)
        for seconds, ids in sorted(by_value.items()):
            yield _Group(seconds, only=ids, besides=[])
        if self.default is not None:
            yield _Group(self.default, only=None, besides=list(explicit))

    def _explicit(self) -> dict[str, float | None]:
        """Definition versions whose pipeline sets a retention (None: forever)."""
        ids = self.definitions.mentioning(MARKER)
        unknown = [i for i in ids if i not in self._policies]
        if unknown:
            for definition in self.definitions.by_ids(unknown):
                self._policies[definition.id] = _policy(definition.name, definition.source)
        return {i: self._policies[i] for i in ids if self._policies.get(i, _UNSET) is not _UNSET}

    def _candidates(self, group: _Group, now: datetime) -> list[str]:
        """The group's finished runs that are due and still have their artifacts."""
        cutoff = now - timedelta(seconds=group.retention)
        return expirable_runs(
            self.store, cutoff, limit=self.batch, only=group.only, besides=group.besides
        )

    # -- deleting --------------------------------------------------------------------

    def _expire_one(self, run_id: str, retention: float, now: datetime) -> bool:
        """Delete one run's artifacts; a store that fails is tried again next sweep."""
        try:
            return self.expire(run_id, retention, now)
        except ArtifactError as exc:
            log.warning("artifacts of run %s not deleted: %s", run_id, exc.message)
            return False

    def expire(self, run_id: str, retention: float, now: datetime) -> bool:
        """Delete the run's artifacts if it is still finished, due and not done already.

        The run's lock is held meanwhile: a retry cannot start while they go.
        """
        with self.store.transaction(run_id) as tx:
            run = tx.run
            cutoff = now - timedelta(seconds=retention)
            if not run.status.terminal or run.completed_at is None or run.completed_at >= cutoff:
                return False
            if run.artifacts_expired_at is not None:
                return False  # already, since the run last ended
            count = self.artifacts().delete_run(run_id)
            tx.update_run(artifacts_expired_at=now)
            tx.event(EXPIRED, count=count, retention=describe(retention), seconds=retention)
        # Its workspace went with its artifacts: a retry starts from an empty one.
        self.store.forget_workspace(run_id)
        log.info(
            "deleted %d artifacts of run %s (retention %s)", count, run_id, describe(retention)
        )
        return True


def _policy(name: str, source: str) -> Any:
    """The retention one definition version sets: seconds, None (forever) or _UNSET."""
    try:
        spec, _ = parse(source, max_bytes=len(source.encode()) + 1, max_nodes=10**7)
    except SpecError:  # it was valid when stored; a parser change is no reason to delete
        return _UNSET
    pipeline = spec.pipelines.get(name)
    if pipeline is None and len(spec.pipelines) == 1:
        pipeline = next(iter(spec.pipelines.values()))
    if pipeline is None or pipeline.artifacts is None:
        return _UNSET
    return pipeline.artifacts.retention


def expiry(store: Store, run_id: str) -> Expiry | None:
    """When the run's artifacts expired, if they did (and the run did not run since)."""
    run = store.get_run(run_id)
    if run.completed_at is None or run.artifacts_expired_at is None:
        return None
    event = store.last_event(run_id, EXPIRED, since=run.completed_at)
    if event is None:
        return None
    payload = event.payload
    return Expiry(event.created_at, int(payload.get("count", 0)), float(payload.get("seconds", 0)))


def explain_missing(store: Store, run_id: str, key: str | None = None) -> None:
    """Raise ArtifactExpired when the run's artifacts are gone for their retention.

    Called where an artifact was not found: "expired" says more than "no such artifact".
    """
    try:
        found = expiry(store, run_id)
    except ConveyorError:  # the run is gone, or the store away: the plain 404 stands
        return
    if found is None:
        return
    what = f"artifact {key} of run {run_id}" if key else f"the artifacts of run {run_id}"
    raise ArtifactExpired(
        f"{what} expired: deleted {found.at:%Y-%m-%d %H:%M} UTC, "
        f"{describe(found.retention)} after the run ended"
    )


class ExplainedArtifacts:
    """The artifact store as steps see it: a miss says so when the run's artifacts expired.

    ``artifact_pull`` of a run whose retention ran out then fails with when and why they
    went, not with a bare "no artifact".
    """

    def __init__(self, inner: ArtifactStore, store: Store) -> None:
        self._inner, self._store = inner, store

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        return self._inner.put(run_id, key, src, kind)

    def get(self, run_id: str, key: str, dest: Path) -> Artifact:
        with self._explained(run_id, key):
            return self._inner.get(run_id, key, dest)

    def open(self, run_id: str, key: str) -> tuple[Artifact, BinaryIO]:
        with self._explained(run_id, key):
            return self._inner.open(run_id, key)

    @contextlib.contextmanager
    def _explained(self, run_id: str, key: str) -> Iterator[None]:
        """A miss inside becomes ArtifactExpired when the run's artifacts expired."""
        try:
            yield
        except ArtifactNotFound as exc:
            if not isinstance(exc, ArtifactExpired):
                explain_missing(self._store, run_id, key)
            raise

    def list(self, run_id: str) -> list[Artifact]:
        return self._inner.list(run_id)

    def delete(self, run_id: str, key: str) -> None:
        self._inner.delete(run_id, key)

    def delete_run(self, run_id: str) -> int:
        return self._inner.delete_run(run_id)
