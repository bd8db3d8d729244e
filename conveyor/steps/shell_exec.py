"""``step.shell_exec``: run commands in a sandbox, one after another.

Template values reach the commands as ``$CONVEYOR_VALUE_n`` environment variables,
never pasted into their text. Commands publish outputs the way GitHub Actions steps
do: by appending ``key=value`` lines or ``key<<DELIMITER`` blocks to the file named
by ``$CONVEYOR_OUTPUT``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.orchestrator.contracts import Sandbox, SandboxConfig, StepContext
from conveyor.orchestrator.durations import Duration
from conveyor.orchestrator.errors import SandboxError, StepFailed
from conveyor.orchestrator.queues import SANDBOX

from .artifact_files import push

STDOUT_LINES = 100
STDOUT_BYTES = 64 * 1024
MAX_OUTPUTS_BYTES = 1024 * 1024
#: Output names the step sets itself; the outputs file may not overwrite them.
RESERVED_OUTPUTS = frozenset({"exit_code", "stdout", "artifacts"})

_OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
# Run inside the sandbox, so the file belongs to whoever runs the commands there.


class ArtifactOut(BaseModel):
    """One file or directory of the workspace to store as an artifact."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Artifact key, e.g. `ui-dist`.")
    path: str = Field(description="File or directory in the workspace, e.g. `/workspace/dist`.")


class ShellExecConfig(BaseModel):
    """Configuration of ``step.shell_exec``: the seed's keys."""

    model_config = ConfigDict(extra="forbid")

    commands: list[str] = Field(
        min_length=1,
        description="Shell commands, each run with /bin/sh -c in turn; the first one that "
        "exits non-zero fails the step. Write outputs to $CONVEYOR_OUTPUT as key=value.",
    )
    image: str | None = Field(
        default=None,
        description="Container image to run in; without one the commands run locally.",
    )
    work_dir: str | None = Field(
        default=None,
        description="Working directory: relative to the workspace, or under /workspace. "
        "Defaults to the workspace.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the commands."
    )
    mounts: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra volumes to mount (Docker sandbox only)."
    )
    memory_limit: str | int | None = Field(
        default=None, description="Memory limit such as 512m or 1g, or a number of bytes."
    )
    cpu_limit: float | None = Field(
        default=None, gt=0, description="CPUs the commands may use (Docker sandbox only)."
    )
    network_mode: str | None = Field(
        default=None,
        description="Container network such as none or bridge (Docker sandbox only).",
    )
    timeout: Duration | None = Field(
        default=None, description="Limit for all the commands together, such as 300s or 10m."
    )
    artifacts_out: list[ArtifactOut] = Field(
        default_factory=list,
        description="Files or directories (stored as a tar) to keep once the commands pass.",
    )


class ShellExec:
    """Runs shell commands in a sandbox whose workspace lives for the whole run."""

    Config: type[BaseModel] = ShellExecConfig
    queue = SANDBOX
    shell_fields = frozenset({"commands"})

    def run(self, ctx: StepContext, config: ShellExecConfig) -> dict[str, Any]:
        """Run every command; return ``exit_code``, ``stdout`` and the commands' outputs."""
        sandbox = ctx.sandbox(SandboxConfig.of(config))
        try:
            return _Session(ctx, sandbox, config).run()
        finally:
            sandbox.close()


class _Session:
    """One step's commands in one open sandbox."""

    def __init__(self, ctx: StepContext, sandbox: Sandbox, config: ShellExecConfig) -> None:
        self.ctx = ctx
        self.sandbox = sandbox
        self.config = config
        self.outputs_path = _outputs_path(sandbox.workspace, ctx.step_key, ctx.attempt)
        self.env = {**ctx.env, **config.env, "CONVEYOR_OUTPUT": self.outputs_path}
        self.stdout: deque[str] = deque(maxlen=STDOUT_LINES)

    def run(self) -> dict[str, Any]:
        """Run the commands, then read back what they wrote to ``$CONVEYOR_OUTPUT``."""
        for number, command in enumerate(self.config.commands, 1):
            self._run_command(number, command)
        outputs = parse_outputs(self._read_outputs())
        stored = [self._store(out) for out in self.config.artifacts_out]
        result = {"exit_code": 0, "stdout": _joined_tail(self.stdout), **outputs}
        if stored:
            result["artifacts"] = stored
        return result

    def _store(self, out: ArtifactOut) -> dict[str, Any]:
        artifact = push(self.ctx, self.sandbox, out.path, out.key)
        self.ctx.log.line(f"stored {out.path} as artifact {artifact.key} ({artifact.size} bytes)")
        return {"key": artifact.key, "size": artifact.size, "checksum": artifact.checksum}

    def _run_command(self, number: int, command: str) -> None:
        self._echo(command)
        result = self.sandbox.exec(command, env=self.env, on_output=self._output)
        if result.exit_code != 0:
            total = len(self.config.commands)
            raise StepFailed(
                f"command {number} of {total} exited with {result.exit_code}: {_shorten(command)}",
                exit_code=result.exit_code,
            )

    def _echo(self, command: str) -> None:
        """Show the command in the log as a shell would: ``$`` first, ``>`` after."""
        first, *rest = command.splitlines() or [""]
        self.ctx.log.line(f"$ {first}")
        for text in rest:
            self.ctx.log.line(f"> {text}")

    def _output(self, block: str) -> None:
        """A block of the command's lines: its last ones kept for ``stdout``, all logged."""
        # The tail is an output: NUL cannot be stored, so binary output shows as U+FFFD,
        # as it does in the log.
        last = block[:-1].rsplit("\n", STDOUT_LINES)[-STDOUT_LINES:]
        self.stdout.extend(text.replace("\x00", "\ufffd") for text in last)
        self.ctx.log.write(block)

    def _read_outputs(self) -> str:
        # A fresh, unguessable name that nothing creates unless there are outputs: most
        # steps write none, and then this costs no file at all.
        dest = Path(tempfile.gettempdir()) / f"conveyor-outputs-{uuid.uuid4().hex}"
        try:
            try:
                self.sandbox.copy_out(self.outputs_path, dest)
            except SandboxError:
                return ""  # no command wrote an output (or one cleaned the workspace)
            if not dest.is_file():
                raise StepFailed("$CONVEYOR_OUTPUT was replaced by something other than a file")
            if dest.stat().st_size > MAX_OUTPUTS_BYTES:
                raise StepFailed("the outputs in $CONVEYOR_OUTPUT are larger than 1 MiB")
            return dest.read_text("utf-8", errors="replace")
        finally:
            _remove(dest)


def _remove(path: Path) -> None:
    """Remove a file or a directory tree (copy_out of a directory makes a tree)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def parse_outputs(text: str) -> dict[str, str]:
    """Parse ``key=value`` lines and ``key<<DELIMITER`` blocks, as GitHub Actions does."""
    outputs: dict[str, str] = {}
    lines = enumerate((line.removesuffix("\r") for line in text.split("\n")), 1)
    for number, line in lines:
        if line.strip():
            key, value = _parse_entry(number, line, lines)
            _check_output_name(number, key)
            outputs[key] = value
    return outputs


def _parse_entry(number: int, line: str, rest: Iterator[tuple[int, str]]) -> tuple[str, str]:
    equals, heredoc = line.find("="), line.find("<<")
    if equals >= 0 and (heredoc < 0 or equals < heredoc):
        return line[:equals], line[equals + 1 :]
    if heredoc < 0:
        raise _outputs_error(number, f"expected key=value or key<<DELIMITER, got {line!r}")
    key, delimiter = line[:heredoc], line[heredoc + 2 :]
    if not delimiter:
        raise _outputs_error(number, f"{key}<< needs a delimiter")
    body: list[str] = []
    for _, text in rest:
        if text == delimiter:
            return key, "\n".join(body)
        body.append(text)
    raise _outputs_error(number, f"{key}<<{delimiter} has no closing {delimiter} line")


def _check_output_name(number: int, key: str) -> None:
    if key in RESERVED_OUTPUTS:
        raise _outputs_error(number, f"{key!r} is set by step.shell_exec itself; pick another name")
    if not _OUTPUT_NAME.fullmatch(key):
        raise _outputs_error(
            number,
            f"{key!r} is not an output name (letters, digits, _ and -, not starting with a digit)",
        )


def _outputs_error(number: int, message: str) -> StepFailed:
    return StepFailed(f"$CONVEYOR_OUTPUT line {number}: {message}")


def _outputs_path(workspace: str, step_key: str, attempt: int) -> str:
    """A fresh file per step attempt, so a retry never reads an old attempt's outputs."""
    name = _UNSAFE_FILE_CHARS.sub("_", step_key)
    return f"{workspace.rstrip('/')}/.conveyor/outputs/{name}-{attempt}"


def _joined_tail(lines: deque[str]) -> str:
    """The last lines as one text, cut from the front to at most 64 KiB."""
    data = "\n".join(lines).encode("utf-8")
    return data[-STDOUT_BYTES:].decode("utf-8", errors="ignore")


def _shorten(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
