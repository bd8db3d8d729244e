"""Moving files between a step's sandbox and the artifact store (used by several steps).

Directories travel as tar archives and come back unpacked; unpacking refuses absolute
paths, `..`, links that point outside, device files, and stops at a size cap.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from conveyor.orchestrator.artifacts import Artifact
from conveyor.orchestrator.contracts import Sandbox, StepContext
from conveyor.orchestrator.errors import SandboxError, StepFailed

#: Unpacked size a directory artifact may not exceed (a tar bomb stops here).
MAX_UNPACKED = 20 * 1024**3


def push(ctx: StepContext, sandbox: Sandbox, source: str, key: str) -> Artifact:
    """Store the file or directory ``source`` of the sandbox as artifact ``key``."""
    with tempfile.TemporaryDirectory(prefix="conveyor-push-") as tmp:
        local = Path(tmp) / "content"
        try:
            sandbox.copy_out(source, local)
        except SandboxError as exc:
            raise StepFailed(f"cannot store {source} as {key}: {exc.message}") from None
        if local.is_dir():
            archive = Path(tmp) / "content.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(local, arcname=".")
            return ctx.artifacts.put(ctx.run_id, key, archive, kind="dir")
        return ctx.artifacts.put(ctx.run_id, key, local)


def pull(ctx: StepContext, sandbox: Sandbox, run_id: str, key: str, dest: str) -> Artifact:
    """Fetch artifact ``key`` of ``run_id`` into the sandbox at ``dest`` (unpacking dirs)."""
    with tempfile.TemporaryDirectory(prefix="conveyor-pull-") as tmp:
        local = Path(tmp) / "content"
        artifact = ctx.artifacts.get(run_id, key, local)
        place(sandbox, local, dest, directory=artifact.kind == "dir")
        return artifact


def place(sandbox: Sandbox, local: Path, dest: str, *, directory: bool) -> None:
    """Copy a fetched file (or unpacked tar) into the sandbox at ``dest``."""
    if not directory:
        sandbox.copy_in(local, dest)
        return
    unpacked = local.with_name("unpacked")
    unpack(local, unpacked)
    sandbox.copy_in(unpacked, dest)


def unpack(archive: Path, target: Path, limit: int = MAX_UNPACKED) -> None:
    """Extract a tar safely: the data filter refuses what could escape ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check(member)
            total = sum(m.size for m in members if m.isfile())
            if total > limit:
                raise StepFailed(f"the archive unpacks to {total} bytes; the limit is {limit}")
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise StepFailed(f"cannot unpack the artifact: {exc}") from None


def _check(member: tarfile.TarInfo) -> None:
    """Refuse, rather than quietly rewrite, members that reach outside the target.

    The data filter below would also stop them; saying so is clearer to the user.
    """
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise StepFailed(f"cannot unpack the artifact: {name!r} points outside its folder")
    if member.isdev() or member.isfifo():
        raise StepFailed(f"cannot unpack the artifact: {name!r} is a device or pipe")
