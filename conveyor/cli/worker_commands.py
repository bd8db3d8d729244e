"""``conveyor worker`` and ``conveyor beat``: the distributed shape's processes.

Both are Celery's own commands on the app ``make_celery(settings)`` builds, so
Celery's options pass through (``--pool``, ``--max-tasks-per-child``,
``--without-gossip``...). Configured by ``CONVEYOR_DATABASE_URL`` and
``CONVEYOR_BROKER_URL`` like every other command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.queues import STANDARD
from conveyor.orchestrator.settings import Settings

PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def _settings(ctx: click.Context, broker_url: str | None) -> Settings:
    settings: Settings = ctx.find_root().obj
    if broker_url:
        settings = settings.model_copy(update={"broker_url": broker_url})
    if not settings.broker_url:
        raise ConveyorError("no broker: set CONVEYOR_BROKER_URL or pass --broker-url")
    return settings


def _check_schema(settings: Settings) -> None:
    """Refuse to start on a database whose schema is not current (SchemaOutdated)."""
    from conveyor.workers.process import open_current_store  # noqa: PLC0415  (slow import)

    open_current_store(settings).close()  # closed before Celery forks its pool


@click.command(context_settings=PASS_THROUGH)
@click.option(
    "-Q",
    "--queues",
    default=",".join(STANDARD),
    show_default=True,
    help="Comma-separated queues to consume.",
)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Steps run at once.")
@click.option("-n", "--hostname", help="The worker's node name, such as sandbox1@%h.")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("--broker-url", help="Overrides CONVEYOR_BROKER_URL.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def worker(
    ctx: click.Context,
    queues: str,
    concurrency: int | None,
    hostname: str | None,
    loglevel: str,
    broker_url: str | None,
    celery_args: Sequence[str],
) -> None:
    """Run steps from the given queues (any other `celery worker` option passes through)."""
    from conveyor.workers.app import make_celery  # noqa: PLC0415  (Celery loads slowly)
    from conveyor.workers.queues import parse_queues  # noqa: PLC0415

    try:
        names = parse_queues(queues)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-Q") from None
    settings = _settings(ctx, broker_url)
    _check_schema(settings)
    argv = ["worker", "-Q", ",".join(names), "-l", loglevel]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    sys.exit(make_celery(settings).worker_main([*argv, *celery_args]) or 0)


@click.command(context_settings=PASS_THROUGH)
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("--broker-url", help="Overrides CONVEYOR_BROKER_URL.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def beat(
    ctx: click.Context, loglevel: str, broker_url: str | None, celery_args: Sequence[str]
) -> None:
    """Send the reconciler's task every CONVEYOR_RECONCILE_SECONDS (run exactly one)."""
    from conveyor.workers.app import make_celery  # noqa: PLC0415  (Celery loads slowly)

    # Beat only sends messages: it needs the broker, not the database.
    settings = _settings(ctx, broker_url)
    sys.exit(make_celery(settings).start(["beat", "-l", loglevel, *celery_args]) or 0)
