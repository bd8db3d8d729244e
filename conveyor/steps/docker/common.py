"""What the Docker steps share: the image engine behind ``ctx.provider("docker")`` and
the run's workspace on this host, where build contexts live and containers mount it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conveyor.orchestrator.contracts import ImageEngine, SandboxConfig, StepContext
from conveyor.orchestrator.errors import PluginError, StepFailed

WORKSPACE = "/workspace"


def image_engine(ctx: StepContext) -> ImageEngine:
    """The ``docker`` provider, checked to be an ImageEngine."""
    engine = ctx.provider("docker")
    if not isinstance(engine, ImageEngine):
        raise PluginError(f"provider docker ({type(engine).__name__}) is not an ImageEngine")
    return engine


@contextmanager
def run_workspace(ctx: StepContext) -> Iterator[Path]:
    """The run's workspace directory on this host, shared with every step of the run.

    Opened as the local sandbox does, so it is created when missing and removed with
    the rest of the run's workspace once the run is over.
    """
    sandbox = ctx.sandbox(SandboxConfig())
    try:
        yield Path(sandbox.workspace).resolve()
    finally:
        sandbox.close()


def workspace_path(root: Path, path: str, what: str, within: str = "the workspace") -> Path:
    """``path`` (relative to the workspace, or under /workspace) on this host.

    StepFailed when it leaves the workspace, links included.
    """
    if posixpath.isabs(path):
        normal = posixpath.normpath(path)
        if normal != WORKSPACE and not normal.startswith(WORKSPACE + "/"):
            raise StepFailed(f"{what} {path!r} is outside the workspace: use a relative path")
        path = posixpath.relpath(normal, WORKSPACE)
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise StepFailed(f"{what} {path!r} is outside {within}")
    return resolved
