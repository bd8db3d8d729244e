"""What a Docker container may be given: checked before any engine is asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import SandboxConfig
from conveyor.orchestrator.errors import SandboxError
from conveyor.orchestrator.settings import Settings
from conveyor.providers.docker.policy import container_options, container_path, mount_target


def options(tmp_path: Path, **config: Any) -> dict[str, Any]:
    """The create options for busybox with ``config``, mounts under tmp_path allowed."""
    settings = Settings(data_dir=tmp_path, docker_allowed_mounts=[str(tmp_path)])
    return container_options(SandboxConfig(image="busybox", **config), settings)


def test_the_defaults_are_strict(tmp_path: Path) -> None:
    # Given a config that asks for nothing, When it becomes create options
    found = options(tmp_path)
    # Then the container has no network, no capabilities, no new privileges, a pids cap
    assert found["network_mode"] == "none"
    assert found["cap_drop"] == ["ALL"]
    assert found["security_opt"] == ["no-new-privileges"]
    assert found["pids_limit"] > 0
    assert found["mounts"] == []


@pytest.mark.parametrize(
    "target",
    [
        "/workspace",
        "/workspace/cache",
        "/workspace/../workspace/x",
        "/",
        "//",
        "/proc",
        "/proc/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/shm",
        "/data/../proc",
        "relative/path",
    ],
)
def test_a_mount_may_not_hide_the_workspace_or_the_kernel_interfaces(
    tmp_path: Path, target: str
) -> None:
    # Given an allowed source, When a mount targets a protected place, Then it is refused
    with pytest.raises(SandboxError, match=r"mount|root directory"):
        options(tmp_path, mounts=[{"source": str(tmp_path), "target": target}])


def test_the_refusal_says_why(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="would shadow or sit under /workspace"):
        mount_target("/workspace/cache")
    with pytest.raises(SandboxError, match="is over /proc"):
        mount_target("/proc/1")
    with pytest.raises(SandboxError, match="not an absolute path"):
        mount_target("data")


@pytest.mark.parametrize("target", ["/data", "/opt/cache", "/work", "/workspaces", "/devices"])
def test_other_targets_are_accepted_normalised(tmp_path: Path, target: str) -> None:
    found = options(tmp_path, mounts=[{"source": str(tmp_path), "target": target + "/"}])
    assert found["mounts"][0]["Target"] == target


def test_a_source_holding_the_docker_socket_is_refused(tmp_path: Path) -> None:
    # Given an operator who allows every host path
    settings = Settings(data_dir=tmp_path, docker_allowed_mounts=["/"])
    for source in ("/var/run/docker.sock", "/run", "/"):
        config = SandboxConfig(image="busybox", mounts=[{"source": source, "target": "/host"}])
        # When a mount would carry the engine's socket, Then it is refused all the same
        with pytest.raises(SandboxError, match="Docker socket"):
            container_options(config, settings)


def test_a_source_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="outside the allowed host paths"):
        options(tmp_path, mounts=[{"source": "/etc", "target": "/data"}])


def test_host_networking_needs_the_operator(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="network_mode host is not allowed"):
        options(tmp_path, network_mode="host")
    allowed = Settings(data_dir=tmp_path, docker_allow_host_network=True)
    config = SandboxConfig(image="busybox", network_mode="host")
    assert container_options(config, allowed)["network_mode"] == "host"


@pytest.mark.parametrize(
    ("path", "expected"),
    [(".", "/workspace"), ("src", "/workspace/src"), ("/workspace/a/../b", "/workspace/b")],
)
def test_container_paths_stay_in_the_workspace(path: str, expected: str) -> None:
    assert container_path(path) == expected


@pytest.mark.parametrize("path", ["..", "/etc", "src/../../etc", "/workspace/../etc"])
def test_container_paths_that_leave_are_refused(path: str) -> None:
    with pytest.raises(SandboxError, match="outside the workspace"):
        container_path(path)
