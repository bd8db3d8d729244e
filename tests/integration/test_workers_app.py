"""The Celery side's pieces against the real Redis and RabbitMQ: app, dispatcher, CLI, Flower."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.errors import BrokerUnavailable, ConveyorError
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.workers.app import celery_config, make_celery
from conveyor.workers.dispatcher import CeleryDispatcher, broker_ping
from conveyor.workers.queues import RECONCILE_TASK, RUN_STEP_TASK, parse_queues
from tests.conftest import missing
from tests.integration.test_workers_routing import pipeline, shell
from tests.integration.workers_kit import Submitter, redis_database, stack, wait_until

RABBITMQ_URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """This module's Redis database index."""
    with redis_database() as url:
        yield url


@pytest.fixture
def broker(broker_url: str) -> Iterator[redis.Redis]:
    """A client on the emptied broker database."""
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    yield client
    client.flushdb()


def messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in a queue: headers and decoded ``[args, kwargs, embed]``."""
    raw = [json.loads(item) for item in client.lrange(queue, 0, -1)]
    return [{"headers": m["headers"], "body": json.loads(base64.b64decode(m["body"]))} for m in raw]


def test_the_app_is_configured_for_at_least_once_delivery() -> None:
    # Given settings with a broker and a reconcile interval
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", reconcile_seconds=7)
    # When the app is made
    app = make_celery(settings)
    conf = celery_config(settings)
    # Then messages are acknowledged late, one at a time, JSON only, no result backend
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.accept_content == ["json"] and app.conf.task_ignore_result
    assert set(conf["task_queues"]) == {"control", "sandbox", "scan", "deploy"}
    assert conf["task_routes"][RECONCILE_TASK] == {"queue": "control"}
    # And beat sends the reconciler at the configured interval
    (entry,) = conf["beat_schedule"].values()
    assert (entry["task"], entry["schedule"]) == (RECONCILE_TASK, 7)
    assert {RUN_STEP_TASK, RECONCILE_TASK} <= set(app.tasks)
    # And its tasks are its own: another app in the process has its own, on its settings
    other = make_celery(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert app.tasks[RUN_STEP_TASK].app is app
    assert other.tasks[RUN_STEP_TASK].app is other


def test_an_app_needs_a_broker() -> None:
    with pytest.raises(ConveyorError, match="CONVEYOR_BROKER_URL"):
        make_celery(Settings(broker_url=None))


def test_queue_names_are_checked() -> None:
    assert parse_queues(" sandbox, control,sandbox ") == ("sandbox", "control")
    for bad in ("", "Sandbox", "a b", ","):
        with pytest.raises(ValueError):
            parse_queues(bad)


def test_a_step_is_sent_to_its_queue_with_ids_only(broker_url: str, broker: redis.Redis) -> None:
    # Given a dispatcher on the real Redis
    dispatcher = CeleryDispatcher(make_celery(Settings(broker_url=broker_url)))
    # When a scan step is dispatched
    dispatcher.dispatch(StepRef("run-1", "sast", 2, "scan"))
    # Then one message waits on `scan` carrying the ids, without an eta
    (message,) = messages(broker, "scan")
    assert message["headers"]["task"] == RUN_STEP_TASK
    assert message["body"][0] == ["run-1", "sast", 2]
    assert message["headers"]["eta"] is None
    assert broker.llen("sandbox") == 0


def test_a_step_due_later_is_sent_when_due_not_with_an_eta(
    broker_url: str, broker: redis.Redis
) -> None:
    # Given a dispatcher and a step whose retry is due in a second
    dispatcher = CeleryDispatcher(make_celery(Settings(broker_url=broker_url)))
    due = utcnow() + timedelta(seconds=1)
    # When it is dispatched with that eta
    dispatcher.dispatch(StepRef("run-1", "deploy", 2, "deploy"), due)
    # Then nothing is in the broker before it is due, and a plain message after
    assert broker.llen("deploy") == 0
    wait_until(lambda: broker.llen("deploy") == 1, 10, "the due message")
    assert utcnow() >= due
    (message,) = messages(broker, "deploy")
    assert message["headers"]["eta"] is None
    dispatcher.close()


def test_a_dispatch_without_a_broker_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a dispatcher whose broker is down
    dispatcher = CeleryDispatcher(make_celery(Settings(broker_url=CLOSED)))
    # When a step is dispatched, it returns (the reconciler sends it later)
    started = time.monotonic()
    dispatcher.dispatch(StepRef("run-1", "build", 1, "sandbox"))
    assert time.monotonic() - started < 10
    assert "the reconciler will send it again" in caplog.text


def test_broker_ping_answers_for_redis_and_rabbitmq_and_raises_when_down(
    broker_url: str,
) -> None:
    broker_ping(make_celery(Settings(broker_url=broker_url)))
    with pytest.raises(BrokerUnavailable):
        broker_ping(make_celery(Settings(broker_url=CLOSED)), timeout=1)
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        missing("RabbitMQ", str(exc))
    broker_ping(make_celery(Settings(broker_url=RABBITMQ_URL)))


def conveyor(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``conveyor ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_worker_refuses_an_outdated_schema(tmp_path: Path, broker_url: str) -> None:
    # Given a database no migration has run on
    env = {
        "CONVEYOR_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        "CONVEYOR_BROKER_URL": broker_url,
    }
    # When a worker starts, it says why it will not, and exits
    result = conveyor("worker", "-Q", "sandbox", env=env)
    assert result.returncode == 1
    assert "conveyor db upgrade" in result.stderr
    # And bad queue names and a missing broker are refused as well
    assert conveyor("worker", "-Q", "Not A Queue", env=env).returncode == 2
    no_broker = conveyor("worker", env={"CONVEYOR_DATABASE_URL": env["CONVEYOR_DATABASE_URL"]})
    assert no_broker.returncode == 1 and "CONVEYOR_BROKER_URL" in no_broker.stderr


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_flower_runs_on_the_documented_app(
    tmp_path: Path, pg_database: str, pg_store: SqlStore, broker_url: str
) -> None:
    # Given the stack's environment and the app path the docs give to Celery
    with stack(pg_database, broker_url, tmp_path) as cluster:
        port = free_port()
        app = ["-A", "conveyor.workers.celery_app"]
        where = ["--address=127.0.0.1", f"--port={port}"]
        # When Flower starts on it
        cluster.command("flower", [sys.executable, "-m", "celery", *app, "flower", *where], "")

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        # Then it serves
        wait_until(healthy, 60, "flower answering", cluster)


def test_workers_run_steps_over_rabbitmq_too(
    tmp_path: Path, pg_database: str, pg_store: SqlStore
) -> None:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError as exc:
        missing("RabbitMQ", str(exc))
    # A queue of this test's own: the vhost may be shared with other test sessions
    queue = f"rabbit-{uuid.uuid4().hex[:8]}"
    try:
        with stack(pg_database, RABBITMQ_URL, tmp_path) as cluster:
            # Given a worker on RabbitMQ
            cluster.wait_ready(cluster.worker("rabbit", queue))
            submitter = Submitter(pg_store, cluster.settings)
            extra = f", queue: {queue}"
            # When a run goes through it, it completes
            text = pipeline(
                shell("hello", "echo hello", {}, extra), shell("again", "true", {}, extra)
            )
            run = submitter.submit(text)
            try:
                assert submitter.wait(run.id, 60, cluster).status == "succeeded"
            finally:
                submitter.close()
    finally:
        delete_amqp_queue(queue)


def delete_amqp_queue(name: str) -> None:
    """Remove a durable queue the test declared."""
    from kombu import Connection

    with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(name)
