"""Running the real ``conveyor`` command in a subprocess, as a user would.

Each :class:`Cli` has its own working directory and data directory, and an environment
that inherits nothing ``CONVEYOR_*`` from the host.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conveyor.orchestrator.store.sql import SqlStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_LINE = re.compile(r"^run (?P<id>[0-9a-f-]{36}) of ", re.MULTILINE)
# Variables that would change how the CLI prints or where it writes.
_DROPPED = ("FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


@dataclass(frozen=True)
class Result:
    """How a finished command ended."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Both streams, for assertion messages."""
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"

    @property
    def run_id(self) -> str:
        """The id ``conveyor run`` printed first."""
        match = RUN_LINE.search(self.stdout)
        assert match, self.output
        return match.group("id")


class Cli:
    """``python -m conveyor`` in a directory of its own."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONVEYOR_") and k not in _DROPPED
        }
        self.env.update(CONVEYOR_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1", **env)
        shutil.copytree(EXAMPLES, workdir / "examples")

    def __call__(self, *args: str, timeout: float = 30, **env: str) -> Result:
        """Run ``conveyor ARGS`` to its end."""
        proc = subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.workdir,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start ``conveyor ARGS`` and return at once."""
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", *args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def write(self, name: str, text: str | bytes) -> Path:
        """Write a file into the working directory."""
        path = self.workdir / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    @property
    def database(self) -> Path:
        """The embedded SQLite file."""
        return self.data_dir / "conveyor.db"

    @contextmanager
    def store(self) -> Iterator[SqlStore]:
        """The store the command wrote to."""
        assert self.database.is_file(), f"no database at {self.database}"
        store = SqlStore(f"sqlite:///{self.database}")
        try:
            yield store
        finally:
            store.close()

    def dump(self) -> str:
        """Every row of every table, as text: for looking for what must not be there."""
        with sqlite3.connect(self.database) as conn:
            return "\n".join(conn.iterdump())

    def count_rows(self, table: str) -> int:
        """Rows in ``table`` (0 when there is no database at all)."""
        if not self.database.exists():
            return 0
        with sqlite3.connect(self.database) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if table not in names:
                return 0
            (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(count)


def alive(pid: int) -> bool:
    """True while ``pid`` is a running process (a zombie counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone(pid: int, within: float = 3.0) -> bool:
    """True once ``pid`` has stopped, waiting at most ``within`` seconds."""
    until = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


def wait_for_file(path: Path, within: float = 15.0) -> str:
    """The text of ``path`` once it exists and is not empty."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        if path.is_file() and (text := path.read_text().strip()):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {within}s")
