"""Real ``conveyor worker`` and ``conveyor beat`` processes for the integration tests.

A :class:`Stack` starts them in their own process groups against the session's fresh
Postgres database and a Redis database index of the tests' own, with short leases and
a fast reconciler; :class:`Submitter` starts runs from the test process the way the
API does (``Runtime.submit`` with a ``CeleryDispatcher``). Everything a stack started
is killed when it closes, including sandbox processes its steps left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.pipeline.plan import Compiler
from conveyor.orchestrator.plugins import StepTypes
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.records import EventRecord, RunRecord
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.workers.app import make_celery
from conveyor.workers.dispatcher import CeleryDispatcher
from tests.conftest import missing

REDIS_HOST = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Timers short enough for tests: a lost worker is noticed within seconds.
FAST = {
    "CONVEYOR_LEASE_SECONDS": "3",
    "CONVEYOR_HEARTBEAT_SECONDS": "1",
    "CONVEYOR_RECONCILE_SECONDS": "1",
    "CONVEYOR_STALE_AFTER_SECONDS": "3",
    "CONVEYOR_LOG_FLUSH_SECONDS": "0.1",
}
#: Celery start-up without the cluster chatter a test does not need.
QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")
STARTUP = 60.0  # seconds a process may take to be ready on a loaded machine


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database index held by this process alone while in use, emptied first.

    Test sessions on one machine share its Redis: each takes an index (15 down to 1)
    by locking a file named for it, so two sessions never flush or consume each
    other's messages. The lock goes with the process, however it ends.
    """
    import redis

    try:
        redis.Redis.from_url(f"{REDIS_HOST}/0", socket_connect_timeout=3).ping()
    except Exception as exc:
        missing("Redis", str(exc))
    for index in range(15, 0, -1):
        lock = (Path(tempfile.gettempdir()) / f"conveyor-test-redis-{index}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        url = f"{REDIS_HOST}/{index}"
        flush(url)
        try:
            yield url
        finally:
            flush(url)
            lock.close()
        return
    pytest.fail("every Redis database index is taken by another test session")


def flush(broker_url: str) -> None:
    """Empty the broker's database: Redis restarted with nothing in it."""
    import redis

    redis.Redis.from_url(broker_url).flushdb()


def queue_length(broker_url: str, queue: str) -> int:
    """Messages waiting in a queue (a Redis list named after it)."""
    import redis

    return int(redis.Redis.from_url(broker_url).llen(queue))


@dataclass
class Proc:
    """One started process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ready: re.Pattern[str]

    def text(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


@dataclass
class Stack:
    """Workers and beat of one test, all sharing one database, broker and data dir."""

    database_url: str
    broker_url: str
    root: Path
    overrides: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """Where the workers keep their workspaces."""
        return self.root / "data"

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process: nothing ``CONVEYOR_*`` from outside."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            FAST,
            CONVEYOR_DATABASE_URL=self.database_url,
            CONVEYOR_BROKER_URL=self.broker_url,
            CONVEYOR_DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.overrides)
        return env

    @property
    def settings(self) -> Settings:
        """The settings the processes read from their environment."""
        values = {k.removeprefix("CONVEYOR_").lower(): v for k, v in self.env.items()}
        return Settings(**{k: v for k, v in values.items() if k in Settings.model_fields})

    def worker(
        self,
        name: str,
        queues: str,
        concurrency: int = 1,
        *extra: str,
        env: Mapping[str, str] | None = None,
        within: Sequence[str] = (),
    ) -> Proc:
        """Start ``conveyor worker -Q queues -n name@%h`` (not waiting for it).

        ``env`` goes over the stack's environment; ``within`` is put before the command
        (``nsenter --net=...``: a worker in another network namespace).
        """
        args = ["worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", *QUIET, *extra]
        return self._start(name, args, rf"{re.escape(name)}@\S+ ready\.", env, within)

    def beat(self, *, env: Mapping[str, str] | None = None, within: Sequence[str] = ()) -> Proc:
        """Start ``conveyor beat`` (not waiting for it)."""
        return self._start("beat", ["beat"], r"beat: Starting", env, within)

    def _start(
        self,
        name: str,
        args: list[str],
        ready: str,
        env: Mapping[str, str] | None = None,
        within: Sequence[str] = (),
    ) -> Proc:
        argv = [*within, sys.executable, "-m", "conveyor", *args]
        return self.command(name, argv, ready, env)

    def command(
        self, name: str, argv: list[str], ready: str, env: Mapping[str, str] | None = None
    ) -> Proc:
        """Start ``argv`` in the stack's environment (``env`` over it), in a group of its own."""
        log = self.root / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=self.root,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: kill -9 reaches its children
            )
        proc = Proc(name, popen, log, re.compile(ready))
        self.procs.append(proc)
        return proc

    def wait_ready(self, *procs: Proc) -> None:
        """Block until every process has said it is ready (fail with its log if not)."""
        until = time.monotonic() + STARTUP
        for proc in procs:
            while not proc.ready.search(proc.text()):
                if proc.popen.poll() is not None:
                    pytest.fail(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.text()}")
                if time.monotonic() > until:
                    pytest.fail(f"{proc.name} not ready within {STARTUP}s:\n{proc.text()}")
                time.sleep(0.1)

    def logs(self) -> str:
        """Every process's output, for assertion messages."""
        return "\n".join(f"===== {p.name}\n{p.text()[-6000:]}" for p in self.procs)

    def close(self) -> None:
        """Kill every process and whatever their steps left running in the data dir."""
        for proc in self.procs:
            proc.kill()
        kill_processes_under(self.data_dir)


def kill_processes_under(directory: Path) -> None:
    """SIGKILL the process group of every process whose working directory is inside."""
    root = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if cwd == root or cwd.startswith(root + "/"):
                os.killpg(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def stack(database_url: str, broker_url: str, root: Path, **overrides: str) -> Iterator[Stack]:
    """A Stack that is closed (every process killed) however the test ends."""
    if broker_url.startswith("redis"):
        flush(broker_url)
    result = Stack(database_url, broker_url, root, dict(overrides))
    try:
        yield result
    finally:
        result.close()


class Submitter:
    """Starts runs as the API does: compile, ``Runtime.submit``, a CeleryDispatcher."""

    def __init__(self, store: SqlStore, settings: Settings) -> None:
        self.store = store
        self.compiler = Compiler.for_settings(settings, StepTypes())
        self.app = make_celery(settings)
        self.dispatcher = CeleryDispatcher(self.app)
        self.runtime = Runtime(store, self.compiler.templates, self.dispatcher)
        self.dispatcher.plans = self.runtime.plan_of  # labels for monitors, as the API's

    def submit(self, text: str, params: dict[str, Any] | None = None) -> RunRecord:
        """Compile ``text`` and start a run of its only pipeline."""
        compiled = self.compiler.compile(text)
        return self.runtime.submit(compiled.select(None), compiled.source, params or {})

    def wait(self, run_id: str, timeout: float, logs: Stack | None = None) -> RunRecord:
        """The run once it is over; fail (with the processes' logs) after ``timeout``."""
        until = time.monotonic() + timeout
        while True:
            run = self.store.get_run(run_id)
            if run.status.terminal:
                return run
            if time.monotonic() > until:
                steps = [(s.key, s.status.value, s.attempts) for s in self.store.list_steps(run_id)]
                pytest.fail(f"run still {run.status} after {timeout}s: {steps}\n{_logs(logs)}")
            time.sleep(0.1)

    def close(self) -> None:
        """Stop the dispatcher's timer."""
        self.dispatcher.close()


def _logs(stack_: Stack | None) -> str:
    return stack_.logs() if stack_ is not None else ""


def runners(events: list[EventRecord], step_key: str) -> list[str]:
    """The worker node (``-n``) of each attempt of a step, from its step.running events."""
    owners = [
        e.payload["owner"] for e in events if e.type == "step.running" and e.step_key == step_key
    ]
    return [owner.rsplit(":", 1)[0].split("@", 1)[0] for owner in owners]


def assert_gap_free(events: list[EventRecord]) -> None:
    """The run's events are numbered 1..n without a gap or a repeat."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def wait_until(predicate: Any, timeout: float, what: str, logs: Stack | None = None) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout``."""
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > until:
            pytest.fail(f"{what}: not within {timeout}s\n{_logs(logs)}")
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    """The non-empty lines of a marker file (none when it does not exist)."""
    return [x for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
