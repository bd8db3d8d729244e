"""The CLI starts fast: it imports only what the command it runs uses.

Every ``conveyor`` call imports the entry module, so what that module imports is paid by
``--version`` and ``--help`` too. These tests keep the heavy libraries out of it, and
keep the help that lists the lazily loaded commands the same as their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from conveyor.cli.lazy import LazyGroup
from conveyor.cli.main import COMMANDS, cli
from conveyor.orchestrator.store import db

#: Libraries none of ``--version``, ``--help`` and a command's parsing needs.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "flask",
    "pydantic",
    "pydantic_settings",
    "rich",
    "jinja2",
    "yaml",
    "urllib.request",
    "conveyor.orchestrator.settings",
    "conveyor.orchestrator.pipeline",
    "conveyor.orchestrator.store.sql",
    "conveyor.orchestrator.engine",
)

LOADED = """
import json, sys
import conveyor.cli.main
{then}
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(tmp_path: Path, then: str = "") -> set[str]:
    """The modules a fresh interpreter holds after importing the CLI (and running ``then``)."""
    code = LOADED.format(then=then)
    env = {"CONVEYOR_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules for h in HEAVY if m == h or m.startswith(h + "."))


def test_importing_the_cli_loads_no_heavy_library(tmp_path: Path) -> None:
    # Given a fresh interpreter
    # When it imports the `conveyor` command's module
    modules = loaded_modules(tmp_path)
    # Then none of SQLAlchemy, Celery, Flask, pydantic, rich, Jinja2... came with it
    assert heavy_in(modules) == []


def test_version_and_help_load_no_heavy_library(tmp_path: Path) -> None:
    # Given a fresh interpreter with the CLI imported
    # When it answers --version and --help (click exits after each)
    then = """
from conveyor.cli.main import cli
for args in (["--version"], ["--help"]):
    try:
        cli.main(args, prog_name="conveyor", standalone_mode=False)
    except SystemExit:
        pass
"""
    modules = loaded_modules(tmp_path, then)
    # Then it still loaded none of the heavy libraries
    assert heavy_in(modules) == []


def test_runs_on_a_current_database_loads_neither_alembic_nor_the_runtime(
    tmp_path: Path,
) -> None:
    # Given an embedded database already migrated by a first command
    run_cli = """
from conveyor.cli.main import cli
cli.main(["runs"], prog_name="conveyor", standalone_mode=False)
"""
    loaded_modules(tmp_path, run_cli)
    # When `conveyor runs` reads it again
    modules = loaded_modules(tmp_path, run_cli)
    # Then it checked the schema without alembic, and loaded no runtime, executor or compiler
    assert "sqlalchemy" in modules
    unused = ("alembic", "jinja2", "yaml", "celery", "flask")
    engine = ("runtime", "executor", "embedded", "wiring")
    assert sorted(m for m in modules if m.split(".")[0] in unused) == []
    assert [m for m in modules if m.rsplit(".", 1)[-1] in engine] == []
    assert not any(m.startswith("conveyor.orchestrator.pipeline") for m in modules)


def test_the_schema_check_knows_the_head_alembic_knows() -> None:
    # Given the migrations directory
    # When the head is read from the files' revision lines
    # Then it is the head alembic computes
    assert db.head_revision() == db._head_from_alembic()


def test_help_lists_every_command_with_its_own_summary() -> None:
    # Given the CLI as a user first meets it: no command loaded
    fresh = LazyGroup(
        name=cli.name,
        commands={n: c for n, c in cli.commands.items() if n not in COMMANDS},
        lazy=COMMANDS,
        params=cli.params,
        help=cli.help,
        context_settings=cli.context_settings,
    )
    listed = CliRunner().invoke(fresh, ["--help"], prog_name="conveyor", terminal_width=80)
    # When every command is loaded and the help asked again
    every = _loaded(cli)
    loaded = CliRunner().invoke(cli, ["--help"], prog_name="conveyor", terminal_width=80)
    # Then the two are the same, and list every registered command
    assert listed.exit_code == 0, listed.output
    assert listed.output == loaded.output
    commands = listed.output.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in commands.splitlines()] == sorted(every)


def test_each_lazy_summary_is_the_first_paragraph_of_the_commands_help() -> None:
    # Given the summaries the lazy group lists without importing the commands
    for name, lazy in COMMANDS.items():
        # When the command itself is loaded
        command = lazy.load()
        # Then its help begins with that summary (so a wide terminal shows the same too)
        first = (command.help or "").split("\n\n", 1)[0]
        assert " ".join(first.split()) == lazy.summary, f"update COMMANDS[{name!r}] in main.py"


def test_a_lazy_command_runs_as_itself() -> None:
    # Given a command that lives in another module
    # When it is asked for by name
    command = cli.get_command(click.Context(cli), "token")
    # Then it is that module's command, subcommands and all
    assert isinstance(command, click.Group)
    assert sorted(command.commands) == ["create", "list", "revoke"]


def _loaded(group: click.Group) -> list[str]:
    ctx = click.Context(group)
    names = group.list_commands(ctx)
    for name in names:
        assert group.get_command(ctx, name) is not None, name
    return names
