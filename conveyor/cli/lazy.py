"""A click group whose commands load on first use.

Every ``conveyor`` call used to import every command's module, and with them Flask,
Celery, SQLAlchemy and rich: most of a second before ``--version`` could answer. The
group below names each command by where it lives and by its help's first sentence, so
``conveyor --help`` lists them all without importing one, and ``conveyor worker``
imports the worker's module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from gettext import gettext
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives (``module:attribute``) and what ``--help`` says of it.

    ``summary`` is the first paragraph of the command's help, as its docstring has it;
    a unit test keeps the two the same.
    """

    target: str
    summary: str

    def load(self) -> click.Command:
        """The command itself (importing its module)."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is asked for."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, loaded or not, in click's (sorted) order."""
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported on first use and kept."""
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands as click does, with a stand-in for those not loaded.

        The stand-in carries the summary alone, which is all the listing reads of a
        command; click shortens it to the terminal's width the same way.
        """
        commands = [(name, self._listed(name)) for name in self.list_commands(ctx)]
        shown = [(name, command) for name, command in commands if not command.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        rows = [(name, command.get_short_help_str(limit)) for name, command in shown]
        with formatter.section(gettext("Commands")):  # click's own words
            formatter.write_dl(rows)

    def _listed(self, name: str) -> click.Command:
        loaded = self.commands.get(name)
        if loaded is not None:
            return loaded
        return click.Command(name, help=self.lazy[name].summary)
