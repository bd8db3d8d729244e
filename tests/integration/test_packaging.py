"""Packaging: compose.yaml, the Dockerfile and the image they make, on a real Docker engine.

The engine comes from ``scripts/docker-engine`` and the base image from
``scripts/base-images`` (no registry can be pulled from where CI runs, so the image is
built FROM a Debian rootfs made locally). The image is built the documented way,
``scripts/build-image``, and then run as compose runs it: ``--network none``, or the host's
network when a container needs this machine's Postgres and Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from conveyor import __version__
from tests.conftest import missing as _missing

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "conveyor-test/python:3.11"
IMAGE = f"conveyor-test/conveyor:packaging-{uuid.uuid4().hex[:8]}"
QUEUES = ("control", "sandbox", "scan", "deploy")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/0"
LISTENING = re.compile(r"listening on (?P<url>http://\S+)/api/v1")
STARTUP = 60.0  # seconds a container may take to be ready on a loaded machine

# The image build is part of the first test that needs it.
pytestmark = pytest.mark.timeout(900)


def missing(component: str, reason: str) -> NoReturn:
    """Skip, or fail under CI (tests.conftest.missing), typed as never returning."""
    _missing(component, reason)
    raise AssertionError("unreachable: missing() skips or fails")


def run(
    args: Sequence[str], *, timeout: float = 120, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """A command's result; the environment is the host's without CONVEYOR_*, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run(
        list(args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **env},
        cwd=ROOT,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, f"{result.args}: {result.stdout}\n{result.stderr}"
    return result.stdout


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    """compose.yaml as YAML sees it (anchors and merge keys resolved)."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose_file: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of compose.yaml by name."""
    found: dict[str, dict[str, Any]] = compose_file["services"]
    return found


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The compose command: the ``docker compose`` plugin, or the ``docker-compose`` program."""
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        missing("docker compose", "neither `docker compose` nor docker-compose is installed")
    return [legacy]


@pytest.fixture(scope="module")
def image(docker: str) -> Iterator[str]:
    """The project image, built by scripts/build-image FROM the local Python base image."""
    if run([docker, "image", "inspect", BASE_IMAGE]).returncode != 0:
        missing("base image", f"{BASE_IMAGE} is not built (run scripts/base-images)")
    ok(
        run(
            [str(ROOT / "scripts/build-image"), "-t", IMAGE, "--base", BASE_IMAGE],
            timeout=600,
            PYTHON=sys.executable,
        )
    )
    yield IMAGE
    run([docker, "rmi", "--force", IMAGE])


@pytest.fixture(scope="module")
def redis_url() -> str:
    """This machine's Redis, which the API and the workers use as their broker."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        missing("Redis", str(exc))
    return REDIS_URL


class Container:
    """A detached container, removed when the test is done with it."""

    def __init__(self, docker: str, args: Sequence[str]) -> None:
        self.docker = docker
        self.id = ok(run([docker, "run", "--detach", *args])).strip()

    def logs(self) -> str:
        """Everything it printed so far, stdout and stderr."""
        result = run([self.docker, "logs", self.id])
        return result.stdout + result.stderr

    def running(self) -> bool:
        """Whether its process is still running."""
        state = run([self.docker, "inspect", "--format", "{{.State.Running}}", self.id])
        return state.stdout.strip() == "true"

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first match of ``pattern`` in its output; fails if it exits or takes too long."""
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            found = re.search(pattern, self.logs())
            if found:
                return found
            assert self.running(), f"the container exited:\n{self.logs()}"
            time.sleep(0.3)
        pytest.fail(f"no {pattern!r} within {STARTUP}s:\n{self.logs()}")

    def remove(self) -> None:
        """Kill and remove it (twice is fine)."""
        run([self.docker, "rm", "--force", self.id])


@pytest.fixture
def containers(docker: str) -> Iterator[list[Container]]:
    """Containers a test starts with ``Container``; all removed afterwards."""
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


# --- compose.yaml -----------------------------------------------------------------------


def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    # Given compose.yaml, Then it has the stack of the design: Postgres, Redis, a one-shot
    # migration, the API, one worker per queue, beat and Flower
    workers = {f"worker-{queue}" for queue in QUEUES}
    expected = {"postgres", "redis", "migrate", "api", "beat", "flower", *workers}
    assert set(services) == expected


def test_compose_commands_are_conveyors(services: dict[str, dict[str, Any]]) -> None:
    # Given compose.yaml, Then each Conveyor service runs the command that starts it
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["api"]["command"] == ["api", "--host", "0.0.0.0", "--port", "8080"]
    for queue in QUEUES:
        command = services[f"worker-{queue}"]["command"]
        assert command[:3] == ["worker", "-Q", queue], command
    assert services["beat"]["command"] == ["beat"]
    assert services["flower"]["entrypoint"] == [
        "celery",
        "-A",
        "conveyor.workers.celery_app",
        "flower",
    ]


def test_compose_services_share_the_image_and_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given every service that runs Conveyor
    conveyors = {name: s for name, s in services.items() if name not in ("postgres", "redis")}
    for name, service in conveyors.items():
        # Then it is built from the Dockerfile, with the base image as a build argument
        assert service["build"]["context"] == ".", name
        assert "CONVEYOR_BASE_IMAGE" in service["build"]["args"]["BASE_IMAGE"], name
        # And it is configured by the database and broker URLs
        env = service["environment"]
        assert env["CONVEYOR_DATABASE_URL"].startswith("postgresql://"), name
        assert env["CONVEYOR_BROKER_URL"].startswith("redis://redis:6379"), name
    assert len({s["image"] for s in conveyors.values()}) == 1


def test_compose_starts_after_the_migration(services: dict[str, dict[str, Any]]) -> None:
    # Given the one-shot migration, Then it waits for a healthy Postgres and never restarts
    assert services["postgres"]["healthcheck"]["test"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    # And the API and the workers start only once it has completed
    for name in ("api", "beat", *(f"worker-{queue}" for queue in QUEUES)):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_compose_file_passes_compose_config(compose: list[str]) -> None:
    # Given compose.yaml, When the compose tool resolves it with a base image of our own
    result = run([*compose, "config"], CONVEYOR_BASE_IMAGE=BASE_IMAGE)
    # Then it accepts it, and the build argument carries the base image
    resolved = yaml.safe_load(ok(result))
    assert resolved["services"]["api"]["build"]["args"]["BASE_IMAGE"] == BASE_IMAGE
    assert resolved["services"]["worker-scan"]["command"][:3] == ["worker", "-Q", "scan"]


def test_compose_defaults_to_a_public_base_image(compose: list[str]) -> None:
    # Given no CONVEYOR_BASE_IMAGE, Then the image builds FROM the usual Python image
    resolved = yaml.safe_load(ok(run([*compose, "config"])))
    assert resolved["services"]["beat"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"


# --- the image --------------------------------------------------------------------------


def test_image_reports_its_version(docker: str, image: str) -> None:
    # Given the image built FROM the local Debian base, When it runs `conveyor --version`
    out = ok(run([docker, "run", "--rm", "--network", "none", image, "--version"]))
    # Then the installed package answers
    assert out.strip() == f"conveyor, version {__version__}"


def test_image_runs_as_a_user_with_a_data_dir(docker: str, image: str) -> None:
    # Given the image, Then its entrypoint is conveyor, run by a user that is not root,
    # with the data dir in its own home
    config = json.loads(ok(run([docker, "image", "inspect", image])))[0]["Config"]
    assert config["Entrypoint"] == ["conveyor"]
    assert config["User"] == "conveyor"
    assert "CONVEYOR_DATA_DIR=/var/lib/conveyor" in config["Env"]
    uid = ok(run([docker, "run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u"]))
    assert uid.strip() != "0"


def _in_image(docker: str, image: str, *command: str) -> list[str]:
    """``docker run`` of ``conveyor COMMAND /tmp/pipeline.yaml``, the file given on stdin."""
    script = 'cat > /tmp/pipeline.yaml && exec conveyor "$@" /tmp/pipeline.yaml'
    return [docker, "run", "--rm", "-i", "--network", "none", "--entrypoint", "sh", image,
            "-c", script, "sh", *command]  # fmt: skip


def test_image_validates_an_example(docker: str, image: str) -> None:
    # Given an example pipeline, When the image validates it
    hello = (ROOT / "examples/hello.yaml").read_text()
    result = run(_in_image(docker, image, "validate"), stdin=hello)
    # Then it is valid
    assert "pipeline hello: 5 steps" in ok(result)


def test_image_reports_a_broken_pipeline(docker: str, image: str) -> None:
    # Given a pipeline whose step misses its config, When the image validates it
    broken = "pipelines:\n  p:\n    steps:\n      - name: a\n        type: step.shell_exec\n"
    result = run(_in_image(docker, image, "validate"), stdin=broken)
    # Then it fails naming the path
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pipelines.p.steps[0]" in result.stdout + result.stderr


def test_image_runs_an_example_in_its_data_dir(docker: str, image: str) -> None:
    # Given an example pipeline, When the image runs it embedded, with no network
    hello = (ROOT / "examples/hello.yaml").read_text()
    result = run(_in_image(docker, image, "run", "--param", "who=docker"), stdin=hello)
    # Then every step succeeds, as the non-root user, in the image's data dir
    out = ok(result)
    assert "✓ build succeeded" in out, out
    assert "hello  ✓ succeeded" in out, out


# --- the image as compose runs it, on this machine's Postgres and Redis -----------------


def _service(
    docker: str, image: str, service: dict[str, Any], database: str, broker: str
) -> list[str]:
    """``docker run`` arguments for a compose service on the host's network and services."""
    entrypoint = service.get("entrypoint")
    args = ["--network", "host", "-e", f"CONVEYOR_DATABASE_URL={database}"]
    args += ["-e", f"CONVEYOR_BROKER_URL={broker}"]
    if entrypoint:
        args += ["--entrypoint", entrypoint[0], image, *entrypoint[1:]]
    else:
        args.append(image)
    return [*args, *service["command"]]


@pytest.mark.postgres
def test_image_migrates_serves_and_works(
    docker: str,
    image: str,
    services: dict[str, dict[str, Any]],
    pg_database: str,
    redis_url: str,
    containers: list[Container],
) -> None:
    # Given a fresh Postgres database, When compose's migrate command runs in the image
    migrate = _service(docker, image, services["migrate"], pg_database, redis_url)
    ok(run([docker, "run", "--rm", *migrate], timeout=STARTUP))
    # And compose's API command, on a free loopback port (later options win in click)
    api = _service(docker, image, services["api"], pg_database, redis_url)
    containers.append(Container(docker, [*api, "--host", "127.0.0.1", "--port", "0"]))
    url = containers[-1].wait_for(LISTENING.pattern)["url"]
    # Then the API is ready: its database is current and its broker answers
    with urllib.request.urlopen(f"{url}/api/v1/readyz", timeout=10) as answer:
        assert json.loads(answer.read())["status"] == "ready"
    # And a worker starts on compose's command, here on a queue of its own so that it takes
    # no message meant for another test's workers
    queue = f"packaging-{uuid.uuid4().hex[:8]}"
    worker = _service(docker, image, services["worker-control"], pg_database, redis_url)
    containers.append(Container(docker, [*worker, "-Q", queue, "-n", f"{queue}@%h"]))
    containers[-1].wait_for(r"ready\.")
