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
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.orchestrator.errors import StepFailed

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import WorkspaceHeads
    from conveyor.orchestrator.workspaces.handoff import WorkspaceHandoff

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
        os.link(staging, path)  # the first process to get there names the host
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    return path.read_text().strip()


class StepWorkspace:
    """What one attempt does with its run's workspace on this host.

    ``open`` runs before each sandbox the step opens (it acts once): the run's source
    is unpacked if this host has none of it yet, then this host's copy is brought to
    the run's newest workspace. ``publish`` runs once the step succeeded: its changes
    become the run's newest workspace. A step that never opened one publishes nothing.
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
        self._baseline: Any = None
        self.opened = False

    def open(self) -> None:
        """Make this host's copy of the workspace current (once per attempt)."""
        if self.opened:
            return
        if self._seed is not None:
            self._seed()
        if self._handoff is not None:
            self._baseline = self._handoff.prepare(self.run_id)
            moved = _describe(self._baseline.fetched, "fetched")
            if moved:
                self._say(f"workspace: {moved}")
        self.opened = True

    def publish(self) -> None:
        """Publish what the step changed as the run's newest workspace."""
        if self._handoff is None or not self.opened:
            return
        try:
            stats = self._handoff.publish(self.run_id, self._baseline)
        except StepFailed:
            raise
        except OSError as exc:
            raise StepFailed(f"workspace could not be published: {exc}") from None
        moved = _describe(stats, "uploaded")
        if moved:
            self._say(f"workspace: {moved}")


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
            seed_run = self._seed
            seed = lambda: seed_run(run_id, source)  # noqa: E731
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
            self.handoff.forget(run_id)
        except Exception as exc:
            log.warning("workspace of run %s not removed yet: %s", run_id, exc)
            return False
        return True


def _describe(stats: Any, verb: str) -> str:
    """``fetched 3 files (1.2 MB), 10 reused here`` from a handoff's stats, or ''."""
    if stats is None:
        return ""
    files = getattr(stats, f"files_{verb}", 0)
    size = getattr(stats, f"bytes_{verb}", 0)
    reused = getattr(stats, "files_reused", 0)
    if not files and not reused:
        return ""
    text = f"{verb} {files} file{'s' if files != 1 else ''} ({_size(size)})"
    if reused:
        text += f", {reused} reused here"
    seconds = getattr(stats, "seconds", None)
    if seconds is not None:
        text += f" in {seconds:.2f}s"
    return text


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
