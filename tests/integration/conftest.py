"""Integration fixtures: real worker processes on the real Postgres and Redis, Docker."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import missing
from tests.integration.workers_kit import Stack, Submitter, redis_database, stack


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """This module's Redis database index."""
    with redis_database() as url:
        yield url


@pytest.fixture
def cluster(
    pg_store: SqlStore, pg_database: str, broker_url: str, tmp_path: Path
) -> Iterator[Stack]:
    """Workers (and beat) started by the test; every process is killed afterwards."""
    with stack(pg_database, broker_url, tmp_path) as result:
        yield result


@pytest.fixture
def submitter(pg_store: SqlStore, cluster: Stack) -> Iterator[Submitter]:
    """Submits runs from the test process, as the API does."""
    result = Submitter(pg_store, cluster.settings)
    yield result
    result.close()


@pytest.fixture(scope="module")
def docker() -> str:
    """The docker command, talking to an engine that answers."""
    path = shutil.which("docker")
    if path is None:
        missing("Docker engine", "no docker command (scripts/docker-engine installs one)")
    answer = subprocess.run([path, "info"], capture_output=True, text=True, timeout=30, check=False)
    if answer.returncode != 0:
        missing(
            "Docker engine", f"`docker info` failed (run scripts/docker-engine): {answer.stderr}"
        )
    return path
