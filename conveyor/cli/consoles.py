"""The CLI's two consoles: results on stdout, problems on stderr."""

from __future__ import annotations

import os
import sys

from rich.console import Console

#: Columns used when output goes to a pipe or file: wide enough that run ids, step
#: keys and error messages reach ``grep`` and ``less`` whole instead of cut at 80.
PIPE_WIDTH = 200


class _Console(Console):
    """A console that outlives its reader.

    Rich's own answer to a closed pipe is ``SystemExit(1)`` from inside ``print``: for
    ``conveyor run … | head -1`` that would abandon a run half-way, with its status
    ``running`` for ever. Here the output just goes nowhere and the run goes on.
    """

    def on_broken_pipe(self) -> None:
        """Write the rest of the output nowhere."""
        self.quiet = True
        silence(self.file)


def silence(stream: object) -> None:
    """Point ``stream``'s descriptor at /dev/null, so Python's flush at exit is quiet too."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno())
    finally:
        os.close(devnull)


def _console(*, stderr: bool) -> Console:
    # soft_wrap: a long line stays one line (a terminal wraps it anyway), so messages
    # such as `path: message (line N)` are never split in two.
    console = _Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def silence_stdout() -> None:
    """The reader of stdout went away (``conveyor logs RUN | head``): write the rest nowhere."""
    silence(sys.stdout)


out = _console(stderr=False)
err = _console(stderr=True)
