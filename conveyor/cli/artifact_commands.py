"""``conveyor artifacts``: list a run's artifacts, or fetch one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table
from rich.text import Text

from conveyor.orchestrator.artifacts import describe, expiry, explain_missing
from conveyor.orchestrator.errors import ArtifactNotFound
from conveyor.orchestrator.plugins import load_artifact_store
from conveyor.orchestrator.settings import Settings

from . import backend
from .consoles import out
from .render import when

if TYPE_CHECKING:
    from .remote import Remote


@click.command()
@click.argument("words", nargs=-1, required=True, metavar="RUN | get RUN KEY")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where `get` writes.")
@click.pass_context
def artifacts(ctx: click.Context, words: tuple[str, ...], output: Path | None) -> None:
    """List a run's artifacts (`artifacts RUN`) or fetch one (`artifacts get RUN KEY`).

    From the API when CONVEYOR_API_URL is set, else from this machine's data directory.
    """
    settings: Settings = ctx.find_root().obj
    if words[0] == "get":
        if len(words) != 3:
            raise click.UsageError("usage: conveyor artifacts get RUN KEY [-o PATH]")
        if remote := _remote(settings):
            _get_remote(remote, words[1], words[2], output)
        else:
            _get(settings, words[1], words[2], output)
    elif len(words) == 1:
        if remote := _remote(settings):
            _list_remote(remote, words[0])
        else:
            _list(settings, words[0])
    else:
        raise click.UsageError("usage: conveyor artifacts RUN | conveyor artifacts get RUN KEY")


def _remote(settings: Settings) -> Remote | None:
    from .remote import Remote, api_client  # noqa: PLC0415  (urllib: only for the API)

    client = api_client(settings)
    return Remote(client) if client is not None else None


def _table() -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("KEY", "KIND", "SIZE", "SHA-256", "STORED"):
        table.add_column(column, no_wrap=True)
    return table


def _list_remote(remote: Remote, ref: str) -> None:
    run, _ = remote.run(ref)
    table = _table()
    for artifact in remote.artifacts(run.id):
        stored = datetime.fromisoformat(artifact.created_at) if artifact.created_at else None
        table.add_row(
            Text(artifact.key),
            artifact.kind,
            str(artifact.size),
            artifact.checksum[:16],
            when(stored),
        )
    out.print(table)


def _get_remote(remote: Remote, ref: str, key: str, output: Path | None) -> None:
    run, _ = remote.run(ref)
    dest, size, checksum = remote.fetch(run.id, key, output)
    out.print(f"wrote {dest} ({size} bytes, sha256 {checksum})", markup=False)


def _list(settings: Settings, ref: str) -> None:
    store = backend.open_store(settings)
    run = store.find_run(ref)
    gone = expiry(store, run.id)
    if gone is not None:
        out.print(
            f"the artifacts of run {run.id} expired: {gone.count} deleted "
            f"{when(gone.at)}, {describe(gone.retention)} after the run ended",
            markup=False,
        )
    table = _table()
    for artifact in load_artifact_store(settings).list(run.id):
        table.add_row(
            Text(artifact.key),
            artifact.kind,
            str(artifact.size),
            artifact.checksum[:16],
            when(artifact.created_at),
        )
    out.print(table)


def _get(settings: Settings, ref: str, key: str, output: Path | None) -> None:
    store = backend.open_store(settings)
    run = store.find_run(ref)
    try:
        dest = output or Path(Path(key).name + (".tar" if _is_dir(settings, run.id, key) else ""))
        artifact = load_artifact_store(settings).get(run.id, key, dest)
    except ArtifactNotFound:
        explain_missing(store, run.id, key)  # "expired" says more than "not found"
        raise
    out.print(f"wrote {dest} ({artifact.size} bytes, sha256 {artifact.checksum})", markup=False)


def _is_dir(settings: Settings, run_id: str, key: str) -> bool:
    found = {a.key: a for a in load_artifact_store(settings).list(run_id)}
    return key in found and found[key].kind == "dir"
