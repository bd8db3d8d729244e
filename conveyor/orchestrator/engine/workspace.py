"""A run's workspace on this host, for each step that opens it.

In the embedded shape, and wherever workers share one workspace directory
(``CONVEYOR_WORKSPACE_SHARED``), a run's workspace is one directory and nothing is
copied. Otherwise each worker host keeps its own copy, and the copies are kept in step
through the artifact store (``orchestrator.workspaces``): before a step's first sandbox
opens, this host's copy is brought to the run's newest workspace; after the step
succeeds, what it changed is published as the run's new newest workspace. Steps that
never open a sandbox (``step.set``, ``step.log``...) pay nothing.

The host a copy belongs to is named by ``host_id``: a random id kept in the data
directory, so worker processes sharing a data directory are one host.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.orchestrator.errors import ConveyorError, StepFailed

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import WorkspaceHeads
    from conveyor.orchestrator.workspaces.handoff import Baseline, WorkspaceHandoff

log = logging.getLogger("conveyor.workspaces")

#: The file in the data directory that names this host.
HOST_FILE = "host-id"


def host_id(data_dir: Path) -> str:
    """This host's id: read from ``data_dir/host-id``, made there the first time."""
    path = data_dir / HOST_FILE
    with contextlib.suppress(FileNotFoundError):
        found = path.read_text().strip()
        if found:
            return found
    data_dir.mkdir(parents=True, exist_ok=True)
    made = f"h{secrets.token_hex(6)}"
    staging = path.with_name(f".{HOST_FILE}.{os.getpid()}")
    staging.write_text(made + "\n")
    try:
        with contextlib.suppress(FileExistsError):  # the first process there names the host
            os.link(staging, path)
    finally:
        staging.unlink()
    return path.read_text().strip()


class StepWorkspace:
    """What one attempt does with its run's workspace on this host.

    ``open`` runs before each sandbox the step opens (it acts once): the run's source
    is unpacked if this host has none of it yet (and, before any step published, it
    becomes the run's first workspace), then this host's copy is brought to the run's
    newest workspace. ``finish`` runs once the step ended: if it succeeded, its changes
    become the run's newest workspace; if not, nothing it changed is published and
    this host's copy is brought back to the newest workspace when no other step of the
    run uses it. A step that never opened one does neither.
    """

    def __init__(
        self,
        run_id: str,
        *,
        seed: Callable[[], None] | None,
        handoff: WorkspaceHandoff | None,
        say: Callable[[str], None],
    ) -> None:
        self.run_id, self._seed, self._handoff, self._say = run_id, seed, handoff, say
        self._baseline: Baseline | None = None
        self._mark: Path | None = None
        self.opened = False

    def open(self) -> None:
        """Make this host's copy of the workspace current (once per attempt)."""
        if self.opened:
            return
        handoff = self._handoff
        if handoff is not None and self._mark is None:
            self._mark = handoff.enter(self.run_id)
        # Once the run has a head, the source is in it: this host fetches what it lacks
        # rather than unpacking the whole archive first.
        if self._seed is not None and (
            handoff is None or handoff.heads.workspace_head(self.run_id) is None
        ):
            self._seed()
        if handoff is not None:
            baseline = handoff.prepare(self.run_id)
            if baseline.head is None and self._seed is not None:
                baseline = handoff.publish_first(self.run_id, baseline)
            self._baseline = baseline
            got = baseline.fetched
            moved = _describe(
                "fetched", got.files_fetched, got.bytes_fetched, got.files_reused, got.seconds
            )
            if moved:
                self._say(f"workspace: {moved}")
        self.opened = True

    def finish(self, succeeded: bool) -> None:
        """Publish what the step changed (it succeeded), or keep it from every other step
        (it did not). Raises StepFailed when what a successful step changed cannot be
        published: the step then failed."""
        handoff = self._handoff
        if handoff is None:
            return
        try:
            if self._baseline is None:
                return
            if succeeded:
                self._publish(handoff, self._baseline)
            else:
                self._discard(handoff)
        finally:
            if self._mark is not None:
                handoff.leave(self._mark)
                self._mark = None

    def release(self) -> None:
        """Stop using this host's copy without publishing or discarding (a step whose
        lease may be another's by now)."""
        if self._handoff is not None and self._mark is not None:
            self._handoff.leave(self._mark)
            self._mark = None

    def _publish(self, handoff: WorkspaceHandoff, baseline: Baseline) -> None:
        try:
            stats = handoff.publish(self.run_id, baseline)
        except StepFailed:
            raise
        except ConveyorError as exc:  # the database or the artifact store is away
            raise StepFailed(f"workspace could not be published: {exc.message}") from None
        except OSError as exc:
            raise StepFailed(f"workspace could not be published: {exc}") from None
        moved = _describe("uploaded", stats.files_uploaded, stats.bytes_uploaded, 0, stats.seconds)
        if moved:
            self._say(f"workspace: {moved}")

    def _discard(self, handoff: WorkspaceHandoff) -> None:
        try:
            if handoff.discard(self.run_id, self._mark):
                self._say("workspace: what this attempt changed here was undone")
        except Exception as exc:  # the step failed already: say so, and go on
            self._say(f"workspace: what this attempt changed could not be undone: {exc}")


class Workspaces:
    """This process's side of runs' workspaces: one ``StepWorkspace`` per attempt, and
    the removal of a run's handed-over workspace once the run is over."""

    def __init__(
        self,
        *,
        seed: Callable[[str, str], None] | None = None,
        handoff: WorkspaceHandoff | None = None,
        heads: WorkspaceHeads | None = None,
    ) -> None:
        self._seed, self.handoff, self.heads = seed, handoff, heads

    def for_attempt(
        self, run_id: str, source: str | None, say: Callable[[str], None]
    ) -> StepWorkspace | None:
        """The attempt's workspace hook; None when there is nothing to do."""
        seed = None
        if source is not None and self._seed is not None:
            seed = functools.partial(self._seed, run_id, source)
        if seed is None and self.handoff is None:
            return None
        return StepWorkspace(run_id, seed=seed, handoff=self.handoff, say=say)

    def run_over(self, run_id: str, succeeded: bool) -> None:
        """The run ended. If it succeeded, its handed-over workspace goes (manifests,
        blobs, this host's index); a failed or cancelled run keeps it, so a retry starts
        each step again from what its needs left, until its artifacts go (retention)."""
        if self.handoff is None or not succeeded:
            return
        self.forget(run_id)

    def removed_here(self, run_id: str) -> None:
        """This host's copy of the run's workspace was removed: forget what it held."""
        if self.handoff is not None:
            self.handoff.forget(run_id)

    def sweep(self, limit: int = 100) -> int:
        """Remove the handed-over workspaces succeeded runs still keep; how many went."""
        if self.handoff is None or self.heads is None:
            return 0
        return sum(self.forget(r) for r in self.heads.succeeded_with_workspace(limit))

    def forget(self, run_id: str) -> bool:
        """Remove the run's handed-over workspace; False when that has to wait (the
        reconciler's sweep tries again)."""
        if self.handoff is None:
            return False
        try:
            self.handoff.remove(run_id)
        except Exception as exc:
            log.warning("workspace of run %s not removed yet: %s", run_id, exc)
            return False
        return True


def _describe(verb: str, files: int, size: int, reused: int, seconds: float) -> str:
    """``fetched 3 files (1.2 MB), 10 reused here in 0.04s``, or '' when nothing moved."""
    if not files and not reused:
        return ""
    text = f"{verb} {files} file{'s' if files != 1 else ''} ({_size(size)})"
    if reused:
        text += f", {reused} reused here"
    return f"{text} in {seconds:.2f}s"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
