"""What a Docker sandbox may be: paths inside the workspace, safe create options.

Defaults are strict (no network, no capabilities, no new privileges, a pids limit);
host networking and bind mounts need the operator's settings, and the Docker socket is
never mounted. A mount never lands on the workspace (over it, under it, or over one of
its parents, which would hide it) nor over ``/proc``, ``/sys`` or ``/dev``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docker.types import Mount

from conveyor.orchestrator.contracts import SandboxConfig
from conveyor.orchestrator.errors import SandboxError
from conveyor.orchestrator.settings import Settings

from ..sandbox_common import CONTAINER_WORKSPACE, parse_memory

PIDS_LIMIT = 1024
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
#: Kernel interfaces a mount must not replace: what they show is what limits rely on.
PROTECTED_TARGETS = ("/proc", "/sys", "/dev")
_MOUNT_KEYS = frozenset({"source", "target", "read_only"})


def container_path(path: str) -> str:
    """``path`` inside the container: relative to /workspace, or under it."""
    joined = posixpath.normpath(posixpath.join(CONTAINER_WORKSPACE, path))
    if joined != CONTAINER_WORKSPACE and not joined.startswith(CONTAINER_WORKSPACE + "/"):
        raise SandboxError(
            f"{path!r} is outside the workspace: paths are relative to it or under "
            f"{CONTAINER_WORKSPACE}"
        )
    return joined


def container_options(config: SandboxConfig, settings: Settings) -> dict[str, Any]:
    """The container's create options: safe defaults, the limits, checked mounts."""
    if not config.image:
        raise SandboxError("the Docker sandbox needs an image")
    memory = parse_memory(config.memory_limit)
    options: dict[str, Any] = {
        "network_mode": _network(config.network_mode, settings),
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "pids_limit": PIDS_LIMIT,
        "mounts": [_mount(entry, settings) for entry in config.mounts],
    }
    if memory is not None:
        options.update(mem_limit=memory, memswap_limit=memory)
    if config.cpu_limit is not None:
        options["nano_cpus"] = int(config.cpu_limit * 1_000_000_000)
    return options


def _network(mode: str | None, settings: Settings) -> str:
    mode = mode or "none"
    if mode == "host" and not settings.docker_allow_host_network:
        raise SandboxError("network_mode host is not allowed (settings: docker_allow_host_network)")
    if mode.startswith("container:"):
        raise SandboxError(f"network_mode {mode} would share another container's network")
    return mode


def _mount(entry: Mapping[str, Any], settings: Settings) -> Mount:
    unknown = set(entry) - _MOUNT_KEYS
    if unknown or "source" not in entry or "target" not in entry:
        raise SandboxError(f"a mount takes source, target and read_only; got {sorted(entry)}")
    source = os.path.realpath(str(entry["source"]))
    target = mount_target(str(entry["target"]))
    if any(Path(socket).is_relative_to(source) for socket in DOCKER_SOCKETS):
        raise SandboxError(f"mount {entry['source']} would expose the Docker socket")
    allowed = [os.path.realpath(prefix) for prefix in settings.docker_allowed_mounts]
    if not any(Path(source).is_relative_to(prefix) for prefix in allowed):
        raise SandboxError(
            f"mount source {entry['source']} is outside the allowed host paths "
            "(settings: docker_allowed_mounts)"
        )
    return Mount(target, source, type="bind", read_only=bool(entry.get("read_only", False)))


def mount_target(target: str) -> str:
    """The normalised mount target; SandboxError when it would hide what must stay."""
    if not posixpath.isabs(target):
        raise SandboxError(f"mount target {target!r} is not an absolute path")
    path = "/" + posixpath.normpath(target).lstrip("/")
    if path == "/":
        raise SandboxError("a mount cannot replace the container's root directory")
    if _within(path, CONTAINER_WORKSPACE) or _within(CONTAINER_WORKSPACE, path):
        raise SandboxError(
            f"mount target {target} would shadow or sit under {CONTAINER_WORKSPACE}, "
            "the run's workspace"
        )
    for protected in PROTECTED_TARGETS:
        if _within(path, protected):
            raise SandboxError(f"mount target {target} is over {protected}, which is not allowed")
    return path


def _within(path: str, base: str) -> bool:
    """True when ``path`` is ``base`` or under it (both normalised)."""
    return path == base or path.startswith(base + "/")
