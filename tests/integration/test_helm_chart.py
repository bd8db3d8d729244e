"""The chart's pods as Kubernetes would start them, run for real on Postgres and Redis.

No cluster here, so the test plays the kubelet for one container at a time, from the
objects the chart renders (tests/unit/test_helm_chart.py checks their shape): the argv
is the image's ENTRYPOINT (`conveyor`) or the container's command, then its args with
`$(VAR)` expanded; the environment comes from its env entries, Secret and ConfigMap
references resolved against the rendered Secret and ConfigMap. Then its probes run as
the kubelet runs them: an exec command in that environment, or an HTTP GET on its port.

First as processes of this environment (quick, and the worker's probe is seen to fail once
the worker is gone), then in the project's image built by scripts/build-image, under the
pod's securityContext as `docker run` applies it: read-only root, user 10001, no
capabilities, emptyDirs as tmpfs mounts.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import missing, new_pg_database
from tests.integration.test_packaging import BASE_IMAGE, Container, ok, run
from tests.integration.workers_kit import STARTUP, Proc, Stack
from tests.unit.test_helm_chart import RELEASE, ROOT, Rendered, container, render

POD_NAME = "ci-conveyor-worker-control-5d8f9-x2x7q"
#: What the image's PATH finds: this environment's own `conveyor` and `celery`.
BIN = str(Path(sys.executable).parent)
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def free_port() -> int:
    """A TCP port nothing on the loopback listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Pod:
    """One container of a rendered workload, started the way the kubelet would start it."""

    def __init__(self, rendered: Rendered, workload: dict[str, Any], name: str) -> None:
        self.rendered = rendered
        self.pod: dict[str, Any] = workload["spec"]["template"]["spec"]
        self.container = container(workload, name)
        self.env = self._environment()

    def _environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in self.container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
        for entry in self.container.get("env", []):
            env[entry["name"]] = self._value(entry, env)
        return env

    def _value(self, entry: dict[str, Any], env: dict[str, str]) -> str:
        if "value" in entry:
            return VARIABLE.sub(lambda m: env.get(m[1], m[0]), entry["value"])
        source = entry["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            return POD_NAME
        ref = source["secretKeyRef"]
        data = self.rendered.get("Secret", ref["name"])["data"]
        return base64.b64decode(data[ref["key"]]).decode()

    def args(self) -> list[str]:
        """What follows the entrypoint: the rest of the command, then args, $(VAR) expanded."""
        args = [VARIABLE.sub(lambda m: self.env.get(m[1], m[0]), a) for a in self.container["args"]]
        return [*self.container.get("command", ["conveyor"])[1:], *args]

    def argv(self) -> list[str]:
        """The command line here: this Python's `conveyor` (the ENTRYPOINT) or command."""
        return [sys.executable, "-m", self.container.get("command", ["conveyor"])[0], *self.args()]

    def run_options(self) -> list[str]:
        """`docker run` options holding the container to its securityContext and volumes."""
        pod, own = self.pod["securityContext"], self.container["securityContext"]
        options = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}"]
        options += ["--group-add", str(pod["fsGroup"])]
        if own["readOnlyRootFilesystem"]:
            options.append("--read-only")
        if own["allowPrivilegeEscalation"] is False:
            options += ["--security-opt", "no-new-privileges"]
        options += [f"--cap-drop={cap}" for cap in own["capabilities"]["drop"]]
        for mount in self.container["volumeMounts"]:
            # An emptyDir: empty, and writable whoever the user is.
            options += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"]
        for name, value in self.env.items():
            options += ["--env", f"{name}={value}"]
        if "command" in self.container:
            options += ["--entrypoint", self.container["command"][0]]
        return options

    def exec_probe(self, probe: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """Run an exec probe in the container's environment."""
        env = {**os.environ, **self.env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        return subprocess.run(
            probe["exec"]["command"],
            env=env,
            capture_output=True,
            text=True,
            timeout=probe["timeoutSeconds"] + 30,
            check=False,
        )


def start(cluster: Stack, pod: Pod, name: str, ready: str, *extra: str) -> Proc:
    """Start the pod's container as a process of the test's stack, and wait until ready."""
    cluster.overrides.update(pod.env)
    proc = cluster.command(name, [*pod.argv(), *extra], ready)
    cluster.wait_ready(proc)
    return proc


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    """Status and body of a GET (an HTTP probe), with basic auth when given."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_http(url: str, proc: Proc) -> None:
    """Block until ``url`` answers at all (fail with the process's log if it never does)."""
    until = time.monotonic() + STARTUP
    while True:
        try:
            get(url)
            return
        except OSError:
            if proc.popen.poll() is not None or time.monotonic() > until:
                pytest.fail(f"{proc.name} never answered on {url}:\n{proc.text()}")
            time.sleep(0.2)


@pytest.fixture
def chart(cluster: Stack, pg_database: str, broker_url: str) -> Rendered:
    """The chart rendered for this machine's Postgres and the test's Redis database.

    The processes share the stack's data directory, as pods share a ReadWriteMany claim.
    """
    return render(
        {
            "database": {"url": pg_database},
            "broker": {"url": broker_url},
            "config": {"CONVEYOR_ARTIFACT_STORE": "local"},
            "dataVolume": {"existingClaim": "conveyor-data"},
            "dataDir": str(cluster.data_dir),
            "api": {"port": free_port()},
            "flower": {"port": free_port()},
        }
    )


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of its own with no schema at all, dropped afterwards."""
    with new_pg_database("conveyor_chart") as url:
        yield url


def test_a_worker_pod_starts_and_passes_its_liveness_probe(cluster: Stack, chart: Rendered) -> None:
    # Given the control pool's worker container, started as its pod would start it
    pod = Pod(chart, chart.deployment("worker-control"), "worker")
    proc = start(cluster, pod, "worker-control", rf"control@{re.escape(POD_NAME)} ready\.")
    probe = pod.container["livenessProbe"]
    # When the kubelet runs its liveness probe, Then the worker answers the ping
    alive = pod.exec_probe(probe)
    assert alive.returncode == 0, alive.stdout + alive.stderr + cluster.logs()
    assert "pong" in alive.stdout
    # And once the worker is gone the same probe fails, so the kubelet would restart it
    proc.kill()
    dead = pod.exec_probe(probe)
    assert dead.returncode != 0, dead.stdout


def test_the_flower_pod_asks_for_its_login(cluster: Stack, chart: Rendered) -> None:
    # Given Flower's container and the login the chart generated for it
    pod = Pod(chart, chart.deployment("flower"), "flower")
    login = pod.env["FLOWER_BASIC_AUTH"]
    cluster.overrides.update(pod.env)
    proc = cluster.command("flower", [*pod.argv(), "--address=127.0.0.1"], r"Visit me at")
    port = pod.container["ports"][0]["containerPort"]
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthcheck", proc)
    # Then its probe route answers without the login, as the kubelet calls it
    path = pod.container["livenessProbe"]["httpGet"]["path"]
    assert get(f"{base}{path}") == (200, "OK")
    # And the dashboard refuses anyone without it, and opens with it
    assert get(f"{base}/")[0] == 401
    assert get(f"{base}/", auth="admin:wrong")[0] == 401
    assert get(f"{base}/", auth=login)[0] == 200


# -- in the project's image, under the chart's securityContext ----------------------------


@pytest.fixture
def started() -> Iterator[dict[str, Container]]:
    """Containers a test starts, by name; all removed afterwards."""
    result: dict[str, Container] = {}
    yield result
    for running in result.values():
        running.remove()


@pytest.fixture(scope="module")
def image(docker: str) -> Iterator[str]:
    """The project's image, built the documented way FROM the local Python base image."""
    if run([docker, "image", "inspect", BASE_IMAGE]).returncode != 0:
        missing("base image", f"{BASE_IMAGE} is not built (run scripts/base-images)")
    tag = f"conveyor-test/conveyor:chart-{uuid.uuid4().hex[:8]}"
    build = [str(ROOT / "scripts/build-image"), "-t", tag, "--base", BASE_IMAGE]
    ok(run(build, timeout=600, PYTHON=sys.executable))
    yield tag
    run([docker, "rmi", "--force", tag])


def wait_answer(url: str, started: Container) -> None:
    """Block until ``url`` answers at all (fail with the container's log if it never does)."""
    until = time.monotonic() + STARTUP
    while True:
        try:
            get(url)
            return
        except OSError:
            if not started.running() or time.monotonic() > until:
                pytest.fail(f"nothing answered on {url}:\n{started.logs()}")
            time.sleep(0.3)


@pytest.mark.timeout(900)
def test_every_pod_runs_in_the_image_read_only_and_passes_its_probes(
    image: str,
    docker: str,
    started: dict[str, Container],
    broker_url: str,
    empty_database: str,
) -> None:
    # Given the chart for this machine's Postgres (an empty database) and Redis
    rendered = render(
        {
            "database": {"url": empty_database},
            "broker": {"url": broker_url},
            "api": {"port": free_port()},
            "flower": {"port": free_port()},
        }
    )
    host = ["--network", "host"]
    # When the migration job runs in the image: read-only root, user 10001, no capabilities
    job = Pod(rendered, rendered.get("Job", f"{RELEASE}-conveyor-migrate"), "migrate")
    migrated = run([docker, "run", "--rm", *host, *job.run_options(), image, *job.args()])
    # Then the schema is migrated to the one the API and the workers require
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    store = SqlStore(empty_database)
    try:
        store.ensure_current()
    finally:
        store.close()
    # And the API (on the loopback here), a worker, beat and Flower start the same way
    pods = {
        "api": Pod(rendered, rendered.deployment("api"), "api"),
        "worker": Pod(rendered, rendered.deployment("worker-control"), "worker"),
        "beat": Pod(rendered, rendered.deployment("beat"), "beat"),
        "flower": Pod(rendered, rendered.deployment("flower"), "flower"),
    }
    for name, pod in pods.items():
        args = pod.args()
        if name == "api":
            args[args.index("--host") + 1] = "127.0.0.1"
        if name == "flower":
            args.append("--address=127.0.0.1")
        started[name] = Container(docker, [*host, *pod.run_options(), image, *args])
    # Then each becomes ready and passes its probes, as the kubelet runs them
    started["api"].wait_for(r"listening on http://")
    api = pods["api"].container
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        url = f"http://127.0.0.1:{api['ports'][0]['containerPort']}{api[kind]['httpGet']['path']}"
        assert get(url)[0] == 200, (kind, started["api"].logs())
    started["worker"].wait_for(rf"control@{re.escape(POD_NAME)} ready\.")
    probe = pods["worker"].container["livenessProbe"]["exec"]["command"]
    pinged = run([docker, "exec", started["worker"].id, *probe], timeout=60)
    assert pinged.returncode == 0 and "pong" in pinged.stdout, pinged.stdout + pinged.stderr
    started["beat"].wait_for(r"beat: Starting")
    flower = pods["flower"].container
    base = f"http://127.0.0.1:{flower['ports'][0]['containerPort']}"
    wait_answer(f"{base}/healthcheck", started["flower"])
    assert get(f"{base}{flower['livenessProbe']['httpGet']['path']}") == (200, "OK")
    # And none of them has failed on its read-only root filesystem
    for name, running in started.items():
        assert running.running(), f"{name} exited:\n{running.logs()}"
        assert "Read-only file system" not in running.logs(), name
