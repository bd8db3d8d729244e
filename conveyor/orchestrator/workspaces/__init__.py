"""A run's workspace handed between hosts through the artifact store, content-addressed.

Where workers share no directory, each host keeps its own copy of a run's workspace,
and the artifact store holds what they agree on: blobs (file contents, named by their
SHA-256) and manifests (every path of a workspace with its kind, mode, and digest or
link target, named by the SHA-256 of their bytes). The store's workspace head names the
run's newest manifest and the host that published it.

The rule: a run has one linear workspace history. Before a step that uses the
workspace runs, its worker brings its copy to the head (``WorkspaceHandoff.prepare``),
fetching only the files it lacks and copying those it has elsewhere in the directory.
When the step succeeds, its worker computes what it changed relative to what it started
from (paths added, modified, removed) and applies exactly those changes to the run's
current head, by compare-and-set (another step moved it meanwhile: the head is read
again and the same changes applied to it). So a step sees the files of every step that
finished before it started (those of its ``needs`` always, and those of steps that ran
in parallel and finished before it started), and when two steps wrote one path, the one
that finished later wins: what the embedded shape's one shared directory gives. A failed
or cancelled step publishes nothing, so a re-run on another host starts from what its
needs left (on the host where it failed, its files stay in the directory, as they do in
the embedded shape). Steps running at the same time on one host share that host's
directory.

The workspace's own ``.conveyor/`` directory (step outputs) is never handed over. Pipes,
sockets and devices are left out. Links are kept as links and never followed; a link
leading out of the workspace, a path with ``..`` or a path below a link, a blob whose
content does not match its digest, a missing blob: each fails the step with one line
(``WorkspaceRefused``), and nothing is written outside the workspace.

- ``manifest``: ``Entry``, ``Manifest``, ``Changes``, ``diff``, ``apply``.
- ``index``: ``LocalIndex``, what one host believes its copy holds (outside the workspace).
- ``local``: ``snapshot`` and ``materialise``, the directory on this host.
- ``packs``: many small contents stored as one object, and read back a range at a time.
- ``handoff``: ``WorkspaceHandoff``, ``Baseline``, ``PublishStats``.

This package is pure: no SQL, no engine; the store and the artifact store reach it
through ``WorkspaceHeads`` and ``WorkspaceBlobs``.
"""

from conveyor.orchestrator.workspaces.handoff import Baseline, PublishStats, WorkspaceHandoff
from conveyor.orchestrator.workspaces.index import LocalIndex
from conveyor.orchestrator.workspaces.local import (
    MaterialiseStats,
    SnapshotStats,
    materialise,
    snapshot,
)
from conveyor.orchestrator.workspaces.manifest import Changes, Entry, Manifest, apply, diff

__all__ = [
    "Baseline",
    "Changes",
    "Entry",
    "LocalIndex",
    "Manifest",
    "MaterialiseStats",
    "PublishStats",
    "SnapshotStats",
    "WorkspaceHandoff",
    "apply",
    "diff",
    "materialise",
    "snapshot",
]
