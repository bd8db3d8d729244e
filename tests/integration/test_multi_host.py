"""Runs whose steps land on worker hosts that share no directory.

Each host has a data directory of its own; the hosts share only Postgres, Redis and
an S3 artifact store (moto), so a run's files reach the next host only through the
store. Host ``a`` and host ``c`` serve the ``sandbox`` (and ``control``) queue, host
``b`` only ``scan``: every run below crosses from one host to another and back.

The workspace rule these tests hold the engine to: a run has one linear workspace
history. A step sees the files of every step that finished (successfully) before it
started: those of its ``needs`` always, and those of steps it does not need that
happened to finish first; when two steps wrote the same path, the later finisher's
file is the one seen. A failed step's changes are never handed on.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from conveyor.orchestrator.store.records import RunRecord
from tests.integration.api_server import Server, api_server, conveyor, eventually
from tests.integration.hosts_kit import BUCKET, Cluster, cluster
from tests.integration.s3_kit import client
from tests.integration.test_submit_source import multipart, source_dir
from tests.integration.workers_kit import Submitter, assert_gap_free

pytestmark = pytest.mark.postgres

RUNS = 20


def shell(name: str, *commands: str, **extra: Any) -> dict[str, Any]:
    """A step.shell_exec step of ``commands`` (``queue``, ``needs``... in ``extra``)."""
    return {
        "name": name,
        "type": "step.shell_exec",
        "config": {"commands": list(commands)},
        **extra,
    }


def pipeline(*steps: dict[str, Any]) -> str:
    """A pipeline file of one pipeline, ``p``, of the given steps."""
    return yaml.safe_dump({"pipelines": {"p": {"steps": list(steps)}}}, sort_keys=False)


def output(name: str, command: str) -> str:
    """A command that records ``$(command)`` as the step's output ``name``."""
    return f'echo "{name}=$({command})" >> "$CONVEYOR_OUTPUT"'


SHA = "sha256sum blob.bin | cut -c1-64"
#: sandbox -> scan -> sandbox: a tree with a subdirectory, a symlink, an executable,
#: an empty directory and a 1 MiB file; the scan step changes a file, removes one and
#: adds a report; the last step sees all of it.
CROSSING = pipeline(
    shell(
        "checkout",
        "mkdir -p src/pkg empty/dir",
        "printf 'print(\"hi\")\\n' > src/pkg/app.py",
        "printf '#!/bin/sh\\necho tool ran\\n' > tool.sh && chmod 755 tool.sh",
        "ln -s pkg/app.py src/latest",
        "echo stale > obsolete.txt",
        "head -c 1048576 /dev/urandom > blob.bin",
        output("blob", SHA),
    ),
    shell(
        "scan",
        "test -x tool.sh && ./tool.sh",
        'test "$(readlink src/latest)" = pkg/app.py && test "$(cat src/latest)" = \'print("hi")\'',
        'test -d empty/dir && test -z "$(ls -A empty/dir)"',
        'test "$(cat obsolete.txt)" = stale && rm obsolete.txt',
        "mkdir -p reports && grep -c print src/pkg/app.py > reports/scan.txt",
        "echo 'print(\"scanned\")' >> src/pkg/app.py",
        output("blob", SHA),
        queue="scan",
    ),
    shell(
        "verify",
        output("report", "cat reports/scan.txt"),
        output("obsolete", "test -e obsolete.txt && echo present || echo gone"),
        output("app", "tr '\\n' ' ' < src/pkg/app.py"),
        output("empty", "test -d empty/dir && ls -A empty/dir | wc -l"),
        output("link", "readlink src/latest"),
        output("mode", "stat -c %a tool.sh"),
        output("tool", "./tool.sh"),
        output("blob", SHA),
    ),
)
#: What ``verify`` must report (besides the blob's hash, which checkout chose).
VERIFIED = {
    "report": "1",
    "obsolete": "gone",
    "app": 'print("hi") print("scanned") ',
    "empty": "0",
    "link": "pkg/app.py",
    "mode": "755",
    "tool": "tool ran",
}


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Cluster]:
    """Hosts a and c on sandbox and control, host b on scan; nothing shared on disk."""
    with cluster(tmp_path) as result:
        result.host("a", ["sandbox,control"], wait=False)
        result.host("b", ["scan"], wait=False)
        result.host("c", ["sandbox,control"], wait=False)
        result.ready()
        yield result


@pytest.fixture
def submitter(hosts: Cluster) -> Iterator[Submitter]:
    """Starts runs from the test process, as the API does."""
    result = Submitter(hosts.store, hosts.workers.settings)
    yield result
    result.close()


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (on the monotonic clock), at least one."""
    return max(1.0, deadline - time.monotonic())


def outputs(hosts: Cluster, run_id: str) -> dict[str, dict[str, Any]]:
    """Each step's outputs (empty for a step that recorded none)."""
    return {s.key: s.outputs or {} for s in hosts.store.list_steps(run_id)}


def explain(hosts: Cluster, run: RunRecord) -> str:
    """Each step's status and reason, and the processes' logs: for assertion messages."""
    events = hosts.store.list_events(run.id)
    steps = [
        (s.key, s.status.value, s.last_error, hosts.ran_on(events, s.key))
        for s in hosts.store.list_steps(run.id)
    ]
    return f"{run.id} {run.status}: (step, status, reason, hosts) {steps}\n{hosts.workers.logs()}"


def test_runs_crossing_sandbox_and_scan_hosts_see_the_files_of_their_needs(
    hosts: Cluster, submitter: Submitter
) -> None:
    # Given three hosts that share no directory
    # When twenty runs go sandbox -> scan -> sandbox at once
    started = time.monotonic()
    runs = [submitter.submit(CROSSING) for _ in range(RUNS)]
    ended = [submitter.wait(run.id, left(started + 180), hosts.workers) for run in runs]
    print(f"{RUNS} runs in {time.monotonic() - started:.1f}s")

    # Then every run succeeded, and each step saw exactly what the steps before it left
    placed: Counter[tuple[str, str, str]] = Counter()
    for run in ended:
        assert run.status.value == "succeeded", explain(hosts, run)
        steps = {s.key: s for s in hosts.store.list_steps(run.id)}
        said = outputs(hosts, run.id)
        blob = said["checkout"]["blob"]
        assert len(blob) == 64 and said["scan"]["blob"] == blob
        verified = said["verify"]
        assert {k: verified.get(k) for k in VERIFIED} == VERIFIED, explain(hosts, run)
        assert verified["blob"] == blob
        # And the steps ran where their queues are served, each once
        events = hosts.store.list_events(run.id)
        where = {key: hosts.ran_on(events, key) for key in steps}
        assert where["scan"] == ["b"] and len(where["checkout"]) == len(where["verify"]) == 1
        assert {where["checkout"][0], where["verify"][0]} <= {"a", "c"}
        placed[(where["checkout"][0], where["scan"][0], where["verify"][0])] += 1
        assert_gap_free(events)
    print("hosts (checkout, scan, verify):", dict(placed))


def test_hosts_that_share_a_volume_copy_nothing_through_the_store(tmp_path: Path) -> None:
    # Given two hosts whose data directory is one shared volume, and settings that say so
    shared = tmp_path / "volume"
    with cluster(tmp_path, CONVEYOR_WORKSPACE_SHARED="true") as hosts:
        hosts.host("a", ["sandbox,control"], wait=False, data_dir=shared)
        hosts.host("b", ["scan"], wait=False, data_dir=shared)
        hosts.ready()
        submitter = Submitter(hosts.store, hosts.workers.settings)
        try:
            # When runs cross from a to b and back
            started = time.monotonic()
            runs = [submitter.submit(CROSSING) for _ in range(3)]
            ended = [submitter.wait(run.id, left(started + 90), hosts.workers) for run in runs]
        finally:
            submitter.close()
        # Then they succeed, seeing the same files
        for run in ended:
            assert run.status.value == "succeeded", explain(hosts, run)
            verified = outputs(hosts, run.id)["verify"]
            assert {k: verified.get(k) for k in VERIFIED} == VERIFIED
        # And not one file went to the artifact store (the pipelines keep no artifacts)
        s3 = client(hosts.s3_endpoint)
        assert s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) == []


#: Four steps that do not need each other, then one that needs only the slowest.
PARALLEL = pipeline(
    shell("early", "echo early > early.txt", "echo early > same.txt", needs=[]),
    shell(
        "broken",
        "echo broken > broken.txt",
        "exit 3",
        needs=[],
        on_error="continue",
        queue="scan",
    ),
    shell("gate", "sleep 4", "echo gate > same.txt", needs=[]),
    shell(
        "reader",
        output("early", "cat early.txt 2>/dev/null || echo absent"),
        output("same", "cat same.txt"),
        output("broken", "cat broken.txt 2>/dev/null || echo absent"),
        needs=["gate"],
        queue="scan",
    ),
)


def test_a_step_sees_what_finished_before_it_and_nothing_of_a_failed_step(
    hosts: Cluster, submitter: Submitter
) -> None:
    # Given steps in parallel: `early` and `broken` (which fails, its run going on, on
    # the scan host where no other step of its run runs meanwhile) finish well before
    # `gate`, and `reader` needs `gate` only, on the scan host after `broken` failed
    # there: what a failed step wrote is undone on its host and never published (steps
    # of one run running at once on one host share its directory, so there a failed
    # step's files are undone only once no other step of the run runs there)
    runs = [submitter.submit(PARALLEL) for _ in range(3)]
    for submitted in runs:
        run = submitter.wait(submitted.id, 120, hosts.workers)
        # When reader starts (after everything else finished)
        steps = {s.key: s for s in hosts.store.list_steps(run.id)}
        assert steps["broken"].status.value == "failed", explain(hosts, run)
        assert steps["reader"].status.value == "succeeded", explain(hosts, run)
        # Then it sees `early`'s file though it does not need `early`; on the path
        # both wrote, `gate`'s (the later finisher's) file; nothing of `broken`
        read = outputs(hosts, run.id)["reader"]
        assert {k: read.get(k) for k in ("early", "same", "broken")} == {
            "early": "early",
            "same": "gate",
            "broken": "absent",
        }, explain(hosts, run)


SEEDED = pipeline(
    shell(
        "build",
        'test "$(cat message.txt)" = "hello from the laptop"',
        "test -x tools/run.sh && ./tools/run.sh",
        "echo hello again > message.txt && echo built > build.txt",
    ),
    shell(
        "check",
        output("message", "cat message.txt"),
        output("built", "cat build.txt"),
        output("link", "cat docs/latest"),
        output("tool", "./tools/run.sh"),
        "echo checked > check.txt",
        queue="scan",
    ),
    shell(
        "ship",
        output("message", "cat message.txt"),
        output("checked", "cat check.txt"),
        output("git", "test -e .git && echo present || echo absent"),
    ),
)
#: What check and ship report: build's change, not the archive's file, wins everywhere.
SEEN = {
    "check": {
        "message": "hello again",
        "built": "built",
        "link": "hello again",
        "tool": "tool ran",
    },
    "ship": {"message": "hello again", "checked": "checked", "git": "absent"},
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Server, Cluster]]:
    """The API (a data directory of its own), host a on sandbox, host b on scan."""
    secret = Fernet.generate_key().decode()
    with cluster(tmp_path, CONVEYOR_SECRET_KEY=secret) as result:
        result.host("a", ["sandbox,control"], wait=False)
        result.host("b", ["scan"], wait=False)
        result.ready()
        env = {**result.workers.env, "CONVEYOR_DATA_DIR": str(tmp_path / "api-host")}
        made = conveyor("token", "create", "--role", "operator", env=env)
        assert made.returncode == 0, made.stderr
        with api_server(tmp_path, env) as server:
            server.token = made.stdout.strip()
            yield server, result


def seen(server: Server, run_id: str) -> dict[str, dict[str, Any]]:
    """The outputs of check and ship that SEEN names, once the run is over."""

    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = server.call("GET", f"/runs/{run_id}").json
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    run = eventually(ended, 120, f"run {run_id} to end")
    steps = {s["key"]: s for s in run["steps"]}
    assert run["status"] == "succeeded", [
        (k, s["status"], s["last_error"]) for k, s in steps.items()
    ]
    return {key: {k: steps[key]["outputs"].get(k) for k in SEEN[key]} for key in SEEN}


def test_a_source_seeds_a_run_whose_steps_land_on_other_hosts(
    api: tuple[Server, Cluster], tmp_path: Path
) -> None:
    server, hosts = api
    (tmp_path / "pipeline.yaml").write_text(SEEDED)
    src = source_dir(tmp_path)

    # When a run is submitted with its source by the CLI, and one by POST /runs
    done = server.conveyor("submit", str(tmp_path / "pipeline.yaml"), "--source", str(src))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    by_cli = done.stdout.split()[1]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted(src.iterdir()):
            if path.name not in (".git", "__pycache__"):
                tar.add(path, arcname=path.name)
    data, media = multipart({"definition": SEEDED}, archive.getvalue())
    answer = server.call("POST", "/runs", data=data, headers={"Content-Type": media})
    assert answer.status == 201, answer.raw
    by_post = answer.json["id"]

    # Then on both, the scan host saw the source with build's changes over it, and
    # the last sandbox step saw the scan host's file
    for run_id in (by_cli, by_post):
        assert seen(server, run_id) == SEEN, hosts.workers.logs()
        events = hosts.store.list_events(run_id)
        assert [hosts.ran_on(events, k) for k in ("build", "check", "ship")] == [
            ["a"],
            ["b"],
            ["a"],
        ]
    # And the API's own data directory never held a workspace
    assert not (tmp_path / "api-host" / "workspaces").exists() or not any(
        (tmp_path / "api-host" / "workspaces").iterdir()
    )


#: One checkout, then four steps that need it: a fan-out that opens the workspace.
FANOUT = pipeline(
    shell("checkout", "head -c 65536 /dev/urandom > data.bin"),
    *(shell(f"part{i}", f"cp data.bin part{i}.bin", needs=["checkout"]) for i in range(4)),
)


def test_a_runs_steps_go_to_the_host_that_holds_its_workspace(
    hosts: Cluster, submitter: Submitter
) -> None:
    # Given two sandbox hosts, and runs whose checkout lands on either
    started = time.monotonic()
    runs = [submitter.submit(FANOUT) for _ in range(6)]
    ended = [submitter.wait(run.id, left(started + 120), hosts.workers) for run in runs]

    # Then each run's four parts ran on the host holding checkout's workspace, where
    # nothing had to be fetched
    for run in ended:
        assert run.status.value == "succeeded", explain(hosts, run)
        events = hosts.store.list_events(run.id)
        where = {s.key: hosts.ran_on(events, s.key) for s in hosts.store.list_steps(run.id)}
        assert all(where[f"part{i}"] == where["checkout"] for i in range(4)), where
        fetched = [
            line.text
            for line in hosts.store.list_logs(run.id)
            if line.text.startswith("workspace: fetched")
        ]
        assert fetched == [], fetched
