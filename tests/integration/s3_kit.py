"""A moto S3 server of the test's own on 127.0.0.1, and boto3 clients of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tests.conftest import missing

#: Credentials moto accepts while it does not check them.
TESTING = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start ``moto.server`` in a process of its own; yield its URL; kill it afterwards.

    A process of its own: memory tests must count the client's memory, not the server's.
    ``env`` reaches the server (``INITIAL_NO_AUTH_ACTION_COUNT`` turns its IAM checks on).
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, server)
        yield url
    finally:
        server.kill()
        server.wait()


def client(endpoint: str, service: str = "s3", **credentials: str) -> Any:
    """A boto3 client of the moto server (testing credentials unless given)."""
    import boto3

    return boto3.client(
        service, endpoint_url=endpoint, region_name="us-east-1", **(credentials or TESTING)
    )


def empty(s3: Any, bucket: str) -> None:
    """Delete every object of ``bucket``."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])


def _wait_for(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            missing("moto[server]", "the moto server exited at start")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    missing("moto[server]", "the moto server did not answer")
