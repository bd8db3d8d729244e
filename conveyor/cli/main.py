"""``conveyor``: run, validate and inspect pipelines.

The module is what every call imports, so it imports click and the core's plain
vocabulary only: pydantic, rich, SQLAlchemy and the commands of other modules load
inside the commands that use them (``LazyGroup``), so ``--version`` and ``--help``
answer at once and ``runs`` loads no more than it reads with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from conveyor import __version__
from conveyor.orchestrator.errors import ConveyorError, SpecError
from conveyor.orchestrator.status import RunStatus

from . import backend
from .lazy import LazyCommand, LazyGroup

if TYPE_CHECKING:
    from rich.console import Console

    from conveyor.orchestrator.contracts import Store
    from conveyor.orchestrator.settings import Settings
    from conveyor.orchestrator.store import EventRecord, LogRecord, RunRecord, StepRecord

    from .remote import Remote

#: The commands of other modules, imported when called; ``--help`` lists them by these
#: summaries (the first paragraph of each one's help: ``tests/unit/test_cli_startup.py``).
COMMANDS = {
    "api": LazyCommand(
        "conveyor.cli.api_commands:api",
        "Serve the HTTP API under /api/v1 with uvicorn (follow streams on its event loop).",
    ),
    "artifacts": LazyCommand(
        "conveyor.cli.artifact_commands:artifacts",
        "List a run's artifacts (`artifacts RUN`) or fetch one (`artifacts get RUN KEY`).",
    ),
    "beat": LazyCommand(
        "conveyor.cli.worker_commands:beat",
        "Send the reconciler's task every CONVEYOR_RECONCILE_SECONDS (run exactly one).",
    ),
    "submit": LazyCommand(
        "conveyor.cli.api_commands:submit",
        "Start a run of a pipeline file on the API (CONVEYOR_API_URL, CONVEYOR_TOKEN).",
    ),
    "token": LazyCommand(
        "conveyor.cli.api_commands:token",
        "Manage API tokens, on the database itself (so the first admin token can be made).",
    ),
    "watch": LazyCommand(
        "conveyor.cli.api_commands:watch",
        "Follow a run on the API live, as `conveyor run` shows a local one.",
    ),
    "worker": LazyCommand(
        "conveyor.cli.worker_commands:worker",
        "Run steps from the given queues (any other `celery worker` option passes through).",
    ),
}


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _remote(settings: Settings) -> Remote | None:
    """The API's side of the reading commands, when CONVEYOR_API_URL is set."""
    if "api_url" not in settings.model_fields_set:
        return None  # the embedded case: the HTTP client (urllib, http.client) stays unloaded
    from .remote import Remote, api_client  # noqa: PLC0415  (urllib: only for the API)

    client = api_client(settings)
    return Remote(client) if client is not None else None


def _read(path: str, limit: int) -> bytes:
    """The file's bytes; the compiler decodes them and points at the line of a bad byte."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > limit:
            raise SpecError(f"{path} is {_mib(size)}; the limit is {_mib(limit)}")
        return file.read_bytes()
    except IsADirectoryError:
        raise ConveyorError(f"{path} is a directory, not a pipeline file") from None
    except OSError as exc:
        raise ConveyorError(f"cannot read {path}: {exc.strerror or exc}") from None


def _mib(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="conveyor")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded database and workspaces live (CONVEYOR_DATA_DIR).",
)
@click.option("--database-url", help="SQLAlchemy URL of the store (CONVEYOR_DATABASE_URL).")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, database_url: str | None) -> None:
    """Conveyor: CI/CD pipelines as YAML, run here or on a fleet of workers."""
    from pydantic import ValidationError  # noqa: PLC0415  (see the module's docstring)

    from conveyor.orchestrator.settings import Settings  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    if database_url:
        overrides["database_url"] = database_url
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as exc:
        from conveyor.orchestrator.pipeline import format_path  # noqa: PLC0415

        problems = "; ".join(
            f"CONVEYOR_{format_path(e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConveyorError(f"bad settings: {problems}") from None


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A run parameter, seen as {{ .NAME }}.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME=VALUE",
    help="A secret, seen as {{ .secrets.NAME }}, masked as *** everywhere.",
)
@click.option(
    "--secret-env",
    "secret_envs",
    multiple=True,
    metavar="NAME",
    help="A secret read from this environment variable.",
)
@click.option("--pipeline", help="Which pipeline of the file to run (needed when it has several).")
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A directory copied into the run's workspace before the first step "
    "(.git, .conveyor, .venv and __pycache__ are skipped).",
)
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    params: tuple[str, ...],
    secrets: tuple[str, ...],
    secret_envs: tuple[str, ...],
    pipeline: str | None,
    source: Path | None,
) -> None:
    """Run a pipeline here and now, showing each step as it goes.

    Exits 0 when the run succeeds, 1 when it fails or is cancelled, and 128 + the
    signal's number when Ctrl-C (or SIGTERM) stops it; the run is cancelled then.
    """
    from .api_commands import given_secrets, pairs  # noqa: PLC0415  (see the module's docstring)

    settings = _settings(ctx)
    given = given_secrets(secrets, secret_envs)
    run_params = pairs(params, "--param")
    # Compile before touching the store: a bad file leaves no trace in the database.
    compiler = backend.compiler(settings)
    compiled = compiler.compile(_read(file, settings.max_definition_bytes))
    _warn(compiled.warnings)
    plan = compiled.select(pipeline)
    from .running import execute  # noqa: PLC0415  (loads the store: see backend.py)

    engine = backend.engine(settings, compiler)
    engine.workspace_source = source
    sys.exit(execute(engine, plan, compiled.source, run_params, given, _user()))


def _warn(warnings: Sequence[str]) -> None:
    from rich.markup import escape  # noqa: PLC0415  (see the module's docstring)

    from .consoles import err  # noqa: PLC0415

    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def validate(ctx: click.Context, file: str) -> None:
    """Check a pipeline file without running it; print every problem with its line."""
    from rich.markup import escape  # noqa: PLC0415  (see the module's docstring)

    from .consoles import out  # noqa: PLC0415

    settings = _settings(ctx)
    compiled = backend.compiler(settings).compile(_read(file, settings.max_definition_bytes))
    _warn(compiled.warnings)
    for name, plan in compiled.plans.items():
        out.print(f"[green]✓[/] pipeline [bold]{escape(name)}[/]: {len(plan.steps)} steps")


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs in this status."
)
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.pass_context
def runs(ctx: click.Context, limit: int, status: str | None, pipeline: str | None) -> None:
    """List past runs, newest first (from the API when CONVEYOR_API_URL is set)."""
    from .consoles import out  # noqa: PLC0415  (see the module's docstring)
    from .render import runs_table  # noqa: PLC0415

    settings = _settings(ctx)
    if remote := _remote(settings):
        out.print(runs_table(remote.list_runs(limit, status, pipeline)))
        return
    store = backend.open_store(settings)
    try:
        out.print(runs_table(store.list_runs(limit=limit, status=status, pipeline=pipeline)))
    finally:
        store.close()


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Print a run: its steps with status, attempts, duration and outputs, and its event log."""
    from .consoles import out  # noqa: PLC0415  (see the module's docstring)
    from .render import event_line, run_header, steps_table  # noqa: PLC0415

    settings = _settings(ctx)
    if remote := _remote(settings):
        run, steps = remote.run(run_id)
        events = remote.events(run.id)
    else:
        store = backend.open_store(settings)
        try:
            run = store.find_run(run_id)
            steps = store.list_steps(run.id)
            events = store.list_events(run.id)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps(_run_json(run, steps, events), indent=2, default=_json_value))
        return
    out.print(run_header(run))
    if run.error:
        out.print(run.error, style="red", markup=False)
    out.print(f"params: {json.dumps(run.params)}", markup=False)
    out.print(steps_table(steps, outputs=True))
    out.print("[bold]events[/]")
    for event in events:
        out.print(event_line(event))


def _run_json(
    run: RunRecord, steps: Sequence[StepRecord], events: Sequence[EventRecord]
) -> dict[str, Any]:
    data = asdict(run)
    data["duration"] = run.duration
    data["steps"] = [asdict(s) | {"duration": s.duration} for s in steps]
    data["events"] = [asdict(e) for e in events]
    return data


def _json_value(value: Any) -> Any:
    from datetime import datetime  # noqa: PLC0415  (see the module's docstring)

    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return str(value)


@cli.command()
@click.argument("run_id")
@click.argument("step", required=False)
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@click.option(
    "--tail", type=click.IntRange(min=1), help="Only the step's last N lines (needs STEP)."
)
@click.pass_context
def logs(
    ctx: click.Context, run_id: str, step: str | None, attempt: int | None, tail: int | None
) -> None:
    """Print the log of a step (or of every step of the run), whole or its last lines."""
    settings = _settings(ctx)
    if tail is not None:
        _print_tail(settings, run_id, step, attempt, tail)
        return
    lines: Iterable[LogRecord]
    if remote := _remote(settings):
        run, listed = remote.run(run_id)
        steps = {s.key: s for s in listed}
        _check_step(run, steps, step)
        if step is None:
            lines = remote.all_logs(run.id, listed, attempt)
        else:
            lines = remote.logs(run.id, step, attempt)
    else:
        with _local_run(settings, run_id, step) as (store, run, steps):
            # Read as printed: a log of any length is never held whole.
            _print_logs(store.iter_logs(run.id, step, attempt=attempt), steps, step, attempt)
        return
    _print_logs(lines, steps, step, attempt)


def _print_tail(
    settings: Settings, run_id: str, step: str | None, attempt: int | None, count: int
) -> None:
    """The last ``count`` lines of a step's log, read from its newest chunks only."""
    if step is None:
        raise click.UsageError("--tail needs a STEP")
    cut = False
    if remote := _remote(settings):
        from .remote import LOG_PAGE  # noqa: PLC0415  (loaded with the API client only)

        if count > LOG_PAGE:
            raise click.UsageError(f"--tail is at most {LOG_PAGE} over the API")
        run, listed = remote.run(run_id)
        steps = {s.key: s for s in listed}
        _check_step(run, steps, step)
        lines, cut = remote.tail(run.id, step, count, attempt)
    else:
        with _local_run(settings, run_id, step) as (store, run, steps):
            lines = store.tail_logs(run.id, step, count, attempt)
    _print_logs(lines, steps, step, attempt)
    if cut:  # never a silent stop: say what is missing and how to get it
        click.echo(
            f"(only the last {len(lines)} of the {count} lines asked for fit in one answer; "
            f"`conveyor logs {run.id} {step}` prints the whole log)",
            err=True,
        )


@contextlib.contextmanager
def _local_run(
    settings: Settings, run_id: str, step: str | None
) -> Iterator[tuple[Store, RunRecord, dict[str, StepRecord]]]:
    """The local store, open, with the run ``run_id`` names and its steps (``step``
    among them, if given); closed after."""
    store = backend.open_store(settings)
    try:
        run = store.find_run(run_id)
        steps = {s.key: s for s in store.list_steps(run.id)}
        _check_step(run, steps, step)
        yield store, run, steps
    finally:
        store.close()


def _check_step(run: RunRecord, steps: Mapping[str, StepRecord], step: str | None) -> None:
    if step is not None and step not in steps:
        known = ", ".join(steps)
        raise ConveyorError(f"run {run.id} has no step {step!r} (steps: {known})")


def _print_logs(
    lines: Iterable[LogRecord],
    steps: Mapping[str, StepRecord],
    step: str | None,
    attempt: int | None,
) -> None:
    shown: str | None = None
    for line in lines:
        retried = steps[line.step_key].attempts > 1
        if step is None:
            label = f"{line.step_key} #{line.attempt}" if retried else line.step_key
            click.echo(f"[{label}] {line.text}")
            continue
        if retried and attempt is None and shown != f"{line.attempt}":
            shown = f"{line.attempt}"
            click.echo(f"--- attempt {line.attempt} ---")
        click.echo(line.text)


@cli.command()
@click.argument("run_id")
@click.pass_context
def cancel(ctx: click.Context, run_id: str) -> None:
    """Cancel a run: steps not started are cancelled and running ones are stopped."""
    from .consoles import out  # noqa: PLC0415  (see the module's docstring)

    settings = _settings(ctx)
    if remote := _remote(settings):
        out.print(f"run {remote.cancel(run_id).id} cancelled")
        return
    engine = backend.engine(settings)
    try:
        run = engine.store.find_run(run_id)
        engine.runtime.cancel(run.id)
    finally:
        engine.close()
    out.print(f"run {run.id} cancelled")


@cli.command("step-types")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON Schemas only.")
def step_types(name: str | None, as_json: bool) -> None:
    """List the registered step types with their config JSON Schema."""
    from rich.markup import escape  # noqa: PLC0415  (see the module's docstring)

    from conveyor.orchestrator.plugins import StepTypes  # noqa: PLC0415

    from .consoles import out  # noqa: PLC0415

    types = StepTypes()
    names = [name] if name else list(types)
    if name and name not in types:
        raise ConveyorError(f"no step type {name!r} (installed: {', '.join(types)})")
    schemas = {n: types[n].Config.model_json_schema() for n in names}
    if as_json:
        click.echo(json.dumps(schemas, indent=2))
        return
    for n in names:
        doc = (type(types[n]).__doc__ or "").strip().splitlines()
        summary = escape(doc[0]) if doc else ""
        out.print(f"[bold cyan]{escape(n)}[/]  queue={escape(types[n].queue)}  {summary}")
        out.print_json(json.dumps(schemas[n]))


@cli.group()
def db() -> None:
    """Manage the store's schema."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Apply database migrations up to the newest."""
    from .consoles import out  # noqa: PLC0415  (see the module's docstring)

    settings = _settings(ctx.find_root())
    store = backend.bare_store(settings)
    try:
        store.upgrade()
    finally:
        store.close()
    out.print("database schema is current")


def main() -> None:
    """Entry point: every Conveyor error is one line and a non-zero exit, never a traceback."""
    try:
        cli.main(prog_name="conveyor", standalone_mode=False)
    except click.exceptions.Abort:
        _err().print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SpecError as exc:
        _err().print(f"[bold red]invalid pipeline:[/] {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            _err().print(f"  {problem}", markup=False)
        sys.exit(1)
    except ConveyorError as exc:
        _err().print(f"[bold red]error:[/] {_escape(exc.message)}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `conveyor logs RUN | head`: the reader has all it wanted
        from .consoles import silence_stdout  # noqa: PLC0415  (see the module's docstring)

        silence_stdout()
        sys.exit(128 + signal.SIGPIPE)
    except Exception as exc:
        if os.environ.get("CONVEYOR_DEBUG"):
            raise
        where = "(CONVEYOR_DEBUG=1 shows where)"
        what = _escape(f"{type(exc).__name__}: {exc}")
        _err().print(f"[bold red]internal error:[/] {what} {where}")
        sys.exit(1)


def _err() -> Console:
    from .consoles import err  # noqa: PLC0415  (see the module's docstring)

    return err


def _escape(text: str) -> str:
    from rich.markup import escape  # noqa: PLC0415  (see the module's docstring)

    return escape(text)
