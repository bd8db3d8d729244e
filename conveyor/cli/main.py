"""``conveyor``: run, validate and inspect pipelines."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from conveyor import __version__
from conveyor.orchestrator.embedded import EmbeddedEngine, make_compiler, open_store
from conveyor.orchestrator.errors import ConveyorError, SpecError
from conveyor.orchestrator.plugins import StepTypes
from conveyor.orchestrator.records import RunRecord
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store import Store

from .progress import follow
from .render import event_line, run_header, runs_table, steps_table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=what)
        result[key] = value
    return result


def _read(path: str, limit: int) -> str:
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > limit:
            raise SpecError(f"{path} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB")
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConveyorError(f"cannot read {path}: {exc.strerror}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    if database_url:
        overrides["database_url"] = database_url
    ctx.obj = Settings(**overrides)


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
@click.pass_context
def run(
    ctx: click.Context,
    file: str,
    params: tuple[str, ...],
    secrets: tuple[str, ...],
    secret_envs: tuple[str, ...],
    pipeline: str | None,
) -> None:
    """Run a pipeline here and now, showing each step as it goes."""
    settings = _settings(ctx)
    given = _pairs(secrets, "--secret")
    for name in secret_envs:
        if name not in os.environ:
            raise click.BadParameter(
                f"environment variable {name} is not set", param_hint="--secret-env"
            )
        given[name] = os.environ[name]
    engine = EmbeddedEngine(settings)
    try:
        compiled = engine.compile(_read(file, settings.max_definition_bytes))
        for warning in compiled.warnings:
            err.print(f"[yellow]warning:[/] {warning}")
        plan = compiled.select(pipeline)
        record = engine.start(
            plan, compiled.source, _pairs(params, "--param"), secrets=given, submitted_by=_user()
        )
        out.print(
            f"run [bold]{record.id}[/] of [bold cyan]{plan.pipeline}[/]: {len(plan.steps)} steps"
        )
        final = _follow(engine, record.id)
    finally:
        engine.close()
    _summary(engine.store, final)
    sys.exit(0 if final.status == "succeeded" else 1)


def _follow(engine: EmbeddedEngine, run_id: str) -> RunRecord:
    try:
        return follow(engine.store, run_id, out, lambda t: engine.wait(run_id, timeout=t, poll=t))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted: cancelling the run…[/]")
        with contextlib.suppress(ConveyorError):  # it may have finished meanwhile
            engine.runtime.cancel(run_id, "cancelled: interrupted")
        engine.dispatcher.close(wait=True)
        _summary(engine.store, engine.store.get_run(run_id))
        sys.exit(130)


def _summary(store: Store, run: RunRecord) -> None:
    out.print(run_header(run))
    if run.status == "succeeded":
        return
    err.print(f"[bold red]✗ {run.error or run.status}[/]")
    for step in store.list_steps(run.id):
        if step.status == "failed":
            err.print(f"[bold]--- last lines of {step.key} (attempt {step.attempts}) ---[/]")
            for line in store.tail_logs(run.id, step.key, 15):
                err.print(line.text, markup=False, highlight=False)


def _user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def validate(ctx: click.Context, file: str) -> None:
    """Check a pipeline file without running it; print every problem with its line."""
    settings = _settings(ctx)
    compiled = make_compiler(settings).compile(_read(file, settings.max_definition_bytes))
    for warning in compiled.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for name, plan in compiled.plans.items():
        out.print(f"[green]✓[/] pipeline [bold]{name}[/]: {len(plan.steps)} steps")


@cli.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--status", help="Only runs in this status.")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.pass_context
def runs(ctx: click.Context, limit: int, status: str | None, pipeline: str | None) -> None:
    """List past runs, newest first."""
    store = open_store(_settings(ctx))
    out.print(runs_table(store.list_runs(limit=limit, status=status, pipeline=pipeline)))


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Print a run: its steps with status, attempts, duration and outputs, and its event log."""
    store = open_store(_settings(ctx))
    run = store.find_run(run_id)
    steps = store.list_steps(run.id)
    events = store.list_events(run.id)
    if as_json:
        out.print_json(json.dumps(_run_json(run, steps, events), default=str))
        return
    out.print(run_header(run))
    if run.error:
        out.print(f"[red]{run.error}[/]", markup=True)
    out.print(f"params: {json.dumps(run.params)}", markup=False)
    out.print(steps_table(steps, outputs=True))
    out.print("[bold]events[/]")
    for event in events:
        out.print(event_line(event), soft_wrap=True)


def _run_json(run: Any, steps: Sequence[Any], events: Sequence[Any]) -> dict[str, Any]:
    data = asdict(run)
    data["steps"] = [asdict(s) | {"duration": s.duration} for s in steps]
    data["events"] = [asdict(e) for e in events]
    return data


@cli.command()
@click.argument("run_id")
@click.argument("step", required=False)
@click.option("--attempt", type=int, help="Only this attempt (default: all).")
@click.pass_context
def logs(ctx: click.Context, run_id: str, step: str | None, attempt: int | None) -> None:
    """Print the log of a step (or of every step of the run)."""
    store = open_store(_settings(ctx))
    run = store.find_run(run_id)
    keys = [s.key for s in store.list_steps(run.id)]
    if step is not None and step not in keys:
        raise ConveyorError(f"run {run.id} has no step {step!r} (steps: {', '.join(keys)})")
    for line in store.list_logs(run.id, step, attempt=attempt):
        prefix = "" if step else f"[{line.step_key}] "
        click.echo(f"{prefix}{line.text}")


@cli.command()
@click.argument("run_id")
@click.pass_context
def cancel(ctx: click.Context, run_id: str) -> None:
    """Cancel a run: steps not started are cancelled and running ones are stopped."""
    settings = _settings(ctx)
    engine = EmbeddedEngine(settings)
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
        out.print(f"[bold cyan]{n}[/]  queue={types[n].queue}  {doc[0] if doc else ''}")
        out.print_json(json.dumps(schemas[n]))


@cli.group()
def db() -> None:
    """Manage the store's schema."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Apply database migrations up to the newest."""
    settings = _settings(ctx.find_root())
    store = Store(settings.resolved_database_url)
    store.upgrade()
    out.print("database schema is current")


def main() -> None:
    """Entry point: every Conveyor error is one line and a non-zero exit, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SpecError as exc:
        err.print(f"[bold red]invalid pipeline:[/] {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        sys.exit(1)
    except ConveyorError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("CONVEYOR_DEBUG"):
            raise
        where = "(CONVEYOR_DEBUG=1 shows where)"
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} {where}", markup=True)
        sys.exit(1)
