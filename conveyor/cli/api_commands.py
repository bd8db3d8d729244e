"""``conveyor api``, ``submit``, ``watch`` and ``token``: the API and its clients.

``api`` is the composition root of the distributed shape's front door: it builds the
Celery dispatcher and broker check from ``conveyor.workers`` and hands them to
``create_app``, which never imports Celery itself. ``submit`` and ``watch`` talk to the
API over HTTP (``CONVEYOR_API_URL``, ``CONVEYOR_TOKEN``); ``token`` works on the database
directly, so the first admin token can be made before anyone can call the API.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.settings import Settings

from . import backend
from .consoles import err, out
from .render import when

if TYPE_CHECKING:
    from conveyor.orchestrator.contracts import Dispatcher
    from conveyor.orchestrator.engine import Core, Runtime
    from conveyor.orchestrator.store import SqlStore

    from .api_client import ApiClient

ROLES = ("viewer", "operator", "admin")
#: Seconds between two reads of a watched run: a few requests per refresh, not per step.
WATCH_INTERVAL = 0.5


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj
    return settings


# -- conveyor api ------------------------------------------------------------------------


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 512),
    help="Requests answered at once; clients following a log or a run's events hold none "
    "while they wait (their reads share a second pool of as many threads).",
)
@click.pass_context
def api(ctx: click.Context, host: str, port: int, threads: int) -> None:
    """Serve the HTTP API under /api/v1 with uvicorn (follow streams on its event loop).

    Clients following a log or a run's events wait on the event loop and hold no thread;
    every other request is answered on a pool of --threads threads.

    With CONVEYOR_BROKER_URL set, steps go to the Celery workers of their queues; without
    it they run in this process, as with `conveyor run`. Refuses to start on a database
    whose schema is not current (run `conveyor db upgrade`).
    """
    settings = _settings(ctx)
    store = backend.open_store(settings)  # SchemaOutdated: one line, and no server
    # Logging only now: a refusal above stays one line, without alembic's chatter.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        _serve(settings, store, host, port, threads)
    finally:
        store.close()


def _serve(settings: Settings, store: SqlStore, host: str, port: int, threads: int) -> None:
    # The server and Flask load only for `conveyor api`.
    from conveyor.api import create_app  # noqa: PLC0415
    from conveyor.api.server import serve  # noqa: PLC0415

    dispatcher, broker_check, close, mode, core = _dispatching(settings, store)
    try:
        app = create_app(
            settings, store=store, dispatcher=dispatcher, broker_check=broker_check, core=core
        )
        services = app.extensions["conveyor"]
        if settings.broker_url:
            _label_messages(dispatcher, services.runtime)

        def listening(bound: int) -> None:  # the port it got, when given 0
            click.echo(f"Conveyor API listening on http://{host}:{bound}/api/v1 ({mode})")
            sys.stdout.flush()

        # The server refuses what no route would take before reading it: the largest
        # request is a run with its source archive (checked again, per route, by the app).
        largest = app.config["MAX_CONTENT_LENGTH"] + settings.max_source_bytes
        # uvicorn stops cleanly on SIGTERM, then raises it again: that exit is clean too.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        serve(
            app,
            host=host,
            port=port,
            threads=threads,
            max_body=largest,
            poll=services.poll_seconds,
            listening=listening,
        )
    finally:
        close()


def _label_messages(dispatcher: Dispatcher, runtime: Runtime) -> None:
    """Let the Celery dispatcher label its messages for monitors from the runtime's plans."""
    from conveyor.workers.dispatcher import CeleryDispatcher  # noqa: PLC0415  (loaded already)

    if isinstance(dispatcher, CeleryDispatcher) and dispatcher.plans is None:
        dispatcher.plans = runtime.plan_of


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _dispatching(
    settings: Settings, store: SqlStore
) -> tuple[Dispatcher, Callable[[], object] | None, Callable[[], None], str, Core | None]:
    """(dispatcher, broker check, clean-up, description, core) for the settings' shape.

    Without a broker, steps run in this process: the API then works with the embedded
    engine's core, so the process has one runtime and one compiler.
    """
    if settings.broker_url:
        from conveyor.workers.app import make_celery  # noqa: PLC0415  (Celery loads slowly)
        from conveyor.workers.dispatcher import CeleryDispatcher, broker_ping  # noqa: PLC0415

        celery = make_celery(settings)
        dispatcher = CeleryDispatcher(celery)
        return (
            dispatcher,
            partial(broker_ping, celery),
            dispatcher.close,
            "steps go to workers",
            None,
        )
    from conveyor.orchestrator.engine import EmbeddedEngine  # noqa: PLC0415

    engine = EmbeddedEngine(settings, store=store)
    mode = "no broker: steps run in this process"
    return engine.dispatcher, None, engine.close, mode, engine.core


# -- conveyor submit / watch -------------------------------------------------------------


def _client(settings: Settings) -> ApiClient:
    from .api_client import ApiClient  # noqa: PLC0415  (urllib is only for these commands)

    return ApiClient(settings.api_url, settings.token)


def pairs(values: Sequence[str], option: str = "--param") -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping (a usage error naming ``option`` otherwise)."""
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
        result[key] = value
    return result


def given_secrets(secrets: Sequence[str], secret_envs: Sequence[str]) -> dict[str, str]:
    """The secrets of ``--secret NAME=VALUE`` and ``--secret-env NAME`` (read from the
    environment: a usage error when it is not set)."""
    given = pairs(secrets, "--secret")
    for name in secret_envs:
        if name not in os.environ:
            raise click.BadParameter(
                f"environment variable {name} is not set", param_hint="--secret-env"
            )
        given[name] = os.environ[name]
    return given


def _text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConveyorError(f"{path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConveyorError(f"cannot read {path}: {exc.strerror or exc}") from None


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="A run parameter."
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME=VALUE",
    help="A secret, seen as {{ .secrets.NAME }}, masked as *** everywhere (the API needs "
    "CONVEYOR_SECRET_KEY).",
)
@click.option(
    "--secret-env",
    "secret_envs",
    multiple=True,
    metavar="NAME",
    help="A secret read from this environment variable.",
)
@click.option("--pipeline", help="Which pipeline of the file to run (needed when it has several).")
@click.option("--watch", "-w", "follow", is_flag=True, help="Follow the run until it ends.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submitting again with the same key gives the first run instead of a new one.",
)
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False),
    help="A directory sent with the run and unpacked into its workspace before its first "
    "step (without .git, .conveyor, .venv, __pycache__).",
)
@click.pass_context
def submit(
    ctx: click.Context,
    file: str,
    params: tuple[str, ...],
    secrets: tuple[str, ...],
    secret_envs: tuple[str, ...],
    pipeline: str | None,
    follow: bool,
    idempotency_key: str | None,
    source: str | None,
) -> None:
    """Start a run of a pipeline file on the API (CONVEYOR_API_URL, CONVEYOR_TOKEN).

    With --source DIR, DIR is packed (a gzipped tar: links kept as links, modes kept)
    and sent with the run, whose steps find it in their workspace, as with `conveyor run
    --source`. With --watch, follow it live and exit 0 when it succeeds, 1 when it does
    not.
    """
    given = given_secrets(secrets, secret_envs)
    client = _client(_settings(ctx))
    body: dict[str, Any] = {"definition": _text(file), "params": pairs(params)}
    if given:
        body["secrets"] = given
    if pipeline:
        body["pipeline"] = pipeline
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    if source is None:
        run = client.request("POST", "/runs", body, headers)
    else:
        run = _submit_with_source(client, body, Path(source), headers)
    steps = len(run["steps"])
    out.print(f"run [bold]{run['id']}[/] of [bold cyan]{escape(run['pipeline'])}[/]: {steps} steps")
    if follow:
        sys.exit(_follow(client, run["id"]))


def _submit_with_source(
    client: ApiClient, body: dict[str, Any], source: Path, headers: dict[str, str] | None
) -> Any:
    """POST the run with ``source`` packed into a gzipped tar beside it."""
    import tempfile  # noqa: PLC0415

    from conveyor.orchestrator.engine import pack_source  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="conveyor-source-") as scratch:
        packed = pack_source(source, Path(scratch) / "source.tar.gz")
        for name in packed.left_out:
            err.print(f"left out {escape(name)}: a link that leads outside {escape(str(source))}")
        err.print(f"source: {packed.entries} entries, {packed.size} bytes packed")
        return client.upload("/runs", body, {"source": packed.path}, headers)


@click.command()
@click.argument("run_id")
@click.pass_context
def watch(ctx: click.Context, run_id: str) -> None:
    """Follow a run on the API live, as `conveyor run` shows a local one.

    Exits 0 when the run succeeds and 1 when it does not. Ctrl-C stops watching; the
    run goes on.
    """
    sys.exit(_follow(_client(_settings(ctx)), run_id))


def _follow(client: ApiClient, run_id: str) -> int:
    from .api_client import RemoteRun  # noqa: PLC0415  (see _client)
    from .progress import follow  # noqa: PLC0415
    from .running import summary  # noqa: PLC0415  (it loads the store's modules)

    remote = RemoteRun(client, run_id)
    run = remote.refresh()  # a wrong id fails here, before any screen is drawn
    try:
        final = follow(remote, run.id, out, remote.wait, interval=WATCH_INTERVAL)
    except KeyboardInterrupt:
        err.print(f"stopped watching; the run goes on (conveyor watch {run.id})")
        return 130
    summary(remote, final, header=not out.is_terminal)
    return 0 if final.status == "succeeded" else 1


# -- conveyor token ----------------------------------------------------------------------


@click.group()
def token() -> None:
    """Manage API tokens, on the database itself (so the first admin token can be made)."""


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option("--name", help="Who or what uses it (default: USER-ROLE).")
@click.pass_context
def create_token(ctx: click.Context, role: str, name: str | None) -> None:
    """Create a token and print its secret (shown this once, stored only hashed).

    Viewers read; operators also submit, cancel and retry runs; admins also manage tokens.
    """
    from conveyor.orchestrator.store import Tokens  # noqa: PLC0415  (loads the store)

    user = os.environ.get("USER") or "conveyor"
    store = backend.open_store(_settings(ctx))
    try:
        made, secret = Tokens(store).create(name or f"{user}-{role}", role)
    finally:
        store.close()
    err.print(f"token {made.id} ({made.role.value}) {escape(made.name)}: its secret, shown once:")
    click.echo(secret)


@token.command("list")
@click.pass_context
def list_tokens(ctx: click.Context) -> None:
    """List every token (never their secrets), newest first."""
    from conveyor.orchestrator.store import Tokens  # noqa: PLC0415  (loads the store)

    store = backend.open_store(_settings(ctx))
    try:
        found = Tokens(store).list()
    finally:
        store.close()
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"):
        table.add_column(column, no_wrap=True)
    for t in found:
        revoked = when(t.revoked_at) if t.revoked_at else ""
        last_used = when(t.last_used_at)
        table.add_row(t.id, escape(t.name), t.role.value, when(t.created_at), last_used, revoked)
    out.print(table)


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def revoke_token(ctx: click.Context, token_id: str) -> None:
    """Revoke a token: it stops working at once."""
    from conveyor.orchestrator.store import Tokens  # noqa: PLC0415  (loads the store)

    store = backend.open_store(_settings(ctx))
    try:
        Tokens(store).revoke(token_id)
    finally:
        store.close()
    out.print(f"token {token_id} revoked")
