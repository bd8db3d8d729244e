"""A real image registry for the tests: Debian's ``docker-registry`` on 127.0.0.1.

Each :class:`Registry` listens on a free loopback port and stores blobs in a temporary
directory; the engine trusts 127.0.0.0/8 registries over plain HTTP. With ``users`` it
asks for basic auth (htpasswd with bcrypt hashes). Without the binary the tests that
need it skip on a laptop and fail under CI.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import missing

BINARY = "docker-registry"
STARTUP = 30.0
BUSYBOX = "conveyor-test/busybox"
PYTHON = "conveyor-test/python:3.11"


def docker_client(*images: str) -> Any:
    """A client of the Docker engine, with the base ``images`` built (or skip/fail)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        missing("Docker engine", f"{exc} (run scripts/docker-engine)")
    for image in images:
        try:
            client.images.get(image)
        except Exception:
            missing("base image", f"{image} is not built (run scripts/base-images)")
    return client


@dataclass(frozen=True)
class Registry:
    """A running registry: its ``host`` (``127.0.0.1:PORT``) for image references."""

    host: str
    users: Mapping[str, str]

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for ``repository`` (empty when it has none)."""
        try:
            data = self._get(f"/v2/{repository}/tags/list")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise
        return sorted(data.get("tags") or [])

    def digest(self, repository: str, tag: str) -> str:
        """The manifest digest the registry gives ``repository:tag``."""
        request = self._request(f"/v2/{repository}/manifests/{tag}", method="HEAD")
        request.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self._request(path), timeout=10) as response:
            return json.load(response)

    def _request(self, path: str, method: str = "GET") -> urllib.request.Request:
        request = urllib.request.Request(f"http://{self.host}{path}", method=method)
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request


@contextmanager
def registry(tmp: Path, users: Mapping[str, str] | None = None) -> Iterator[Registry]:
    """Start a registry storing under ``tmp``; stop it (and wait for it) afterwards."""
    if shutil.which(BINARY) is None:
        missing("image registry", f"{BINARY} is not installed (run scripts/docker-engine)")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _config(tmp, port, users or {})
    log = (tmp / "registry.log").open("wb")
    process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        found = Registry(f"127.0.0.1:{port}", dict(users or {}))
        _wait_until_listening(process, port, tmp / "registry.log")
        yield found
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    """A Docker CLI ``config.json`` in ``directory`` logged in to ``host`` (DOCKER_CONFIG)."""
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return directory


def _config(tmp: Path, port: int, users: Mapping[str, str]) -> Path:
    lines = [
        "version: 0.1",
        "log: {level: warn}",
        "storage:",
        f"  filesystem: {{rootdirectory: {tmp / 'storage'}}}",
        "  delete: {enabled: true}",
        f"http: {{addr: '127.0.0.1:{port}'}}",
    ]
    if users:
        htpasswd = tmp / "htpasswd"
        htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in users.items()))
        lines += ["auth:", f"  htpasswd: {{realm: conveyor-test, path: {htpasswd}}}"]
    config = tmp / "registry.yml"
    config.write_text("\n".join(lines) + "\n")
    return config


def _bcrypt(password: str) -> str:
    """A bcrypt hash as htpasswd holds it (the registry accepts no other kind)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # the standard library's, up to Python 3.12
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is not None:
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
        if hashed and hashed.startswith("$2"):
            return hashed
    if shutil.which("htpasswd"):
        out = subprocess.run(
            ["htpasswd", "-nbB", "u", password], capture_output=True, text=True, check=True
        )
        return out.stdout.strip().split(":", 1)[1]
    missing("bcrypt", "neither the crypt module nor htpasswd can make a bcrypt hash")
    raise AssertionError("unreachable")


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    until = time.monotonic() + STARTUP
    while time.monotonic() < until:
        if process.poll() is not None:
            raise AssertionError(f"the registry exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"the registry did not listen within {STARTUP}s")
