"""A real ``conveyor api`` in a subprocess on a free 127.0.0.1 port, driven with urllib."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
LISTENING = re.compile(r"listening on (?P<url>http://\S+)/api/v1")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers and body (parsed when it is JSON)."""

    status: int
    headers: Mapping[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        """The body as JSON (the test fails when it is not)."""
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.raw[:300]
        return json.loads(self.raw)


@dataclass
class Server:
    """A running ``conveyor api`` and how to call it."""

    proc: subprocess.Popen[str]
    url: str
    env: dict[str, str]
    log: Path
    token: str | None = None
    lines: list[str] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        """One request to ``/api/v1{path}``; errors come back as answers, not exceptions."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        secret = self.token if token == "default" else token
        if secret:
            sent["Authorization"] = f"Bearer {secret}"
        payload = (
            data if data is not None else (json.dumps(body).encode() if body is not None else None)
        )
        request = urllib.request.Request(self.url + "/api/v1" + path, payload, sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Answer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read())

    def conveyor(
        self, *args: str, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a ``conveyor`` command with this server as CONVEYOR_API_URL."""
        full = {**self.env, "CONVEYOR_API_URL": self.url, **env}
        if self.token and "CONVEYOR_TOKEN" not in env:
            full["CONVEYOR_TOKEN"] = self.token
        return conveyor(*args, env=full, timeout=timeout)


def base_env(tmp: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The host's environment without any CONVEYOR_* variable, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_DATA_DIR=str(tmp / "data"),
        CONVEYOR_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        **extra,
    )
    return env


def conveyor(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def api_server(tmp: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """Start ``conveyor api --port 0`` and wait until it says where it listens."""
    log = tmp / f"api-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "api", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    server = Server(proc, "", env, log)
    try:
        server.url = _listening(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(server: Server, within: float = 30.0) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert server.proc.stdout is not None
    stdout = server.proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if server.proc.poll() is not None:
                raise AssertionError(f"conveyor api exited: {server.log.read_text()}") from None
            continue
        server.lines.append(line)
        if match := LISTENING.search(line):
            return match.group("url")
    raise AssertionError(f"conveyor api did not start: {server.log.read_text()}")


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.1)
