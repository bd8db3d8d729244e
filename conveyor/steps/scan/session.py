"""Running a scanner in a sandbox and reading back its report (shared by the scan steps).

In a container the scanner runs as the container's own command, with its arguments as
an argument list: official scanner images are often shell-less (grype's and
osv-scanner's are), so nothing may depend on ``/bin/sh`` in them. Only a custom
``command`` (a shell script by definition) runs through the Docker sandbox's shell. The
run's workspace is mounted at ``/workspace`` either way; the report, the suppressions
file and source lines are read from it through a local sandbox.

The scanner writes its native JSON to ``.conveyor/scans/<step>-<attempt>.json`` in the
workspace; the step copies that file out rather than reading stdout, where logs and
progress bars mix in. A scanner that exits with a code it never uses for success,
times out, writes no report or writes one that does not parse fails the step, and a
failed scan never passes a gate.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from conveyor.orchestrator.contracts import (
    ImageEngine,
    Sandbox,
    SandboxConfig,
    SandboxRequest,
    StepContext,
)
from conveyor.orchestrator.errors import SandboxError, ScanOutputError, StepFailed, StepTimeout
from conveyor.orchestrator.scanning.results import ScanResult, with_snippets
from conveyor.orchestrator.scanning.scanner import Runner, ScanCommand, Scanner, ScanTarget

from .config import ScanConfig

#: Reports larger than this are refused rather than read into memory.
MAX_REPORT = 256 * 1024 * 1024
#: Source files read to fingerprint findings whose scanner hid the code.
MAX_SOURCE_FILES, MAX_SOURCE_BYTES = 500, 4 * 1024 * 1024
TAIL_LINES = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def find_scanner(ctx: StepContext, name: str) -> Scanner:
    """The provider ``scanner.<name>``, checked to be a Scanner."""
    scanner = ctx.provider(f"scanner.{name}")
    if not isinstance(scanner, Scanner):
        raise StepFailed(f"provider scanner.{name} is not a scanner")
    return scanner


def report_path(step_key: str, attempt: int) -> str:
    """Where this attempt's report goes, relative to the workspace."""
    return f".conveyor/scans/{_UNSAFE.sub('_', step_key)}-{attempt}.json"


def scanner_image(scanner: Scanner, config: ScanConfig) -> str | None:
    """The image the scanner runs in (None for the local runner)."""
    if config.runner == Runner.LOCAL.value:
        return None
    image = config.image or scanner.default_image
    if not image:
        raise StepFailed(
            f"{scanner.name} has no official image: set image to one that has it, "
            "or use runner: local"
        )
    return image


class ScanRun:
    """One scan in one sandbox: run the command, read and parse the report."""

    def __init__(
        self, ctx: StepContext, scanner: Scanner, config: ScanConfig, target: ScanTarget
    ) -> None:
        self.ctx, self.scanner, self.config, self.target = ctx, scanner, config, target
        self.image = scanner_image(scanner, config)
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.command = self._command()
        #: The suppressions file's text, read while the sandbox is open (None: no file).
        self.suppressions: str | None = None

    def _command(self) -> ScanCommand:
        if self.config.command:
            return ScanCommand(("/bin/sh", "-c", self.config.command), frozenset({0}))
        return self.scanner.command(self.target)

    @property
    def display(self) -> str:
        """The command as a person would type it."""
        if self.config.command:
            return self.config.command
        return shlex.join(self.command.argv)

    def execute(self, suppressions: str, *, required: bool) -> ScanResult:
        """Run the scanner and return its parsed report (snippets filled in for SAST).

        The suppressions file ``suppressions`` is read from the same workspace; a missing
        one is an error only when ``required``.
        """
        self.scanner.preflight(self.target, {**self.ctx.env, **self.config.env})
        in_container = self.image is not None and not self.config.command
        # A container scan reads the workspace through a local sandbox: same files.
        sandbox = self.ctx.sandbox(SandboxConfig() if in_container else self._sandbox_config())
        try:
            if in_container:
                self._run_container(sandbox)
            else:
                self._run(sandbox)
            result = self._parse(self._read_report(sandbox))
            self.suppressions = _read_text(sandbox, suppressions)
            if self.suppressions is None and required:
                raise StepFailed(f"the suppressions file {suppressions} is not in the workspace")
            return with_snippets(result, _SourceReader(sandbox).line)
        finally:
            sandbox.close()

    def _sandbox_config(self) -> SandboxConfig:
        docker = self.image is not None
        return SandboxConfig(
            image=self.image,
            network_mode=self.config.network_mode if docker else None,
            memory_limit=self.config.memory_limit,
            timeout=self.config.timeout,
        )

    def _run(self, sandbox: Sandbox) -> None:
        setup = sandbox.exec('mkdir -p "$(dirname "$CONVEYOR_SCAN_REPORT")"', env=self._env())
        if setup.exit_code != 0:
            raise StepFailed(f"could not prepare {self.target.report_path} in the workspace")
        self.ctx.log.line(f"$ {self.display}")
        try:
            result = sandbox.exec(self._script(), env=self._env(), on_line=self._line)
        except StepTimeout as exc:
            raise StepTimeout(f"{self.scanner.name} {exc.message}; the gate did not pass") from exc
        if result.exit_code not in self.command.ok_exit_codes:
            raise StepFailed(self._crash_message(result.exit_code), exit_code=result.exit_code)

    def _run_container(self, workspace: Sandbox) -> None:
        """Run the scanner image with its arguments as the container's command."""
        (Path(workspace.workspace) / self.target.report_path).parent.mkdir(
            parents=True, exist_ok=True
        )
        engine = self.ctx.provider("docker")
        if not isinstance(engine, ImageEngine):
            raise StepFailed("the docker provider is not an image engine")
        env = {**self.ctx.env, **self.command.env, **self.config.env}
        env |= {"CONVEYOR_SCAN_REPORT": self.target.report_path}
        config = self._sandbox_config().model_copy(update={"env": env, "work_dir": "/workspace"})
        request = SandboxRequest(
            self.ctx.run_id, self.ctx.step_key, config, self.ctx.cancel, self.ctx.deadline
        )
        self.ctx.log.line(f"$ {self.display}")
        try:
            result = engine.run(
                request,
                command=list(self.command.argv),
                workspace=Path(workspace.workspace).resolve(),
                on_stdout=self._line,
                on_stderr=self._line,
            )
        except StepTimeout as exc:
            raise StepTimeout(f"{self.scanner.name} {exc.message}; the gate did not pass") from exc
        code = result.exit_code if result.exit_code is not None else -1
        if code not in self.command.ok_exit_codes:
            raise StepFailed(self._crash_message(code), exit_code=code)

    def _script(self) -> str:
        # Every argument travels as an environment variable: nothing from a pipeline is
        # ever pasted into shell text.
        if self.config.command:
            return self.config.command
        return " ".join(f'"$CONVEYOR_SCAN_ARG_{i}"' for i in range(len(self.command.argv)))

    def _env(self) -> dict[str, str]:
        args = {f"CONVEYOR_SCAN_ARG_{i}": arg for i, arg in enumerate(self.command.argv)}
        return {
            **self.ctx.env,
            **self.command.env,
            **self.config.env,
            **args,
            "CONVEYOR_SCAN_REPORT": self.target.report_path,
            "CONVEYOR_SCAN_SOURCE": self.target.source_path,
        }

    def _line(self, text: str) -> None:
        self.tail.append(text)
        self.ctx.log.line(text)

    def _crash_message(self, exit_code: int) -> str:
        last = next((line.strip() for line in reversed(self.tail) if line.strip()), "")
        hint = f": {last[:300]}" if last else ""
        return (
            f"{self.scanner.name} failed (exit code {exit_code}){hint}; "
            "the scan did not complete and the gate did not pass"
        )

    def _read_report(self, sandbox: Sandbox) -> str:
        with tempfile.TemporaryDirectory(prefix="conveyor-scan-") as tmp:
            local = Path(tmp) / "report.json"
            try:
                sandbox.copy_out(self.target.report_path, local)
            except SandboxError:
                raise StepFailed(
                    f"{self.scanner.name} exited without writing its report "
                    f"({self.target.report_path}); the gate did not pass"
                ) from None
            if not local.is_file() or local.stat().st_size > MAX_REPORT:
                raise StepFailed(f"{self.scanner.name}'s report is not a file under 256 MiB")
            return local.read_text("utf-8", errors="replace")

    def _parse(self, text: str) -> ScanResult:
        try:
            return self.scanner.parse(text)
        except (ScanOutputError, ValueError) as exc:
            raise StepFailed(
                f"{self.scanner.name} wrote a report that cannot be parsed ({exc}); "
                "the gate did not pass"
            ) from exc


class _SourceReader:
    """Reads lines of scanned files out of the sandbox, each file once."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.files: dict[str, list[str] | None] = {}

    def line(self, path: str, number: int) -> str | None:
        """Line ``number`` (1-based) of workspace file ``path``, or None."""
        lines = self.files.get(path) if path in self.files else self._load(path)
        if lines is None or not 0 < number <= len(lines):
            return None
        return lines[number - 1]

    def _load(self, path: str) -> list[str] | None:
        lines: list[str] | None = None
        if len(self.files) < MAX_SOURCE_FILES and path and not path.startswith("/"):
            lines = _copy_lines(self.sandbox, path)
        self.files[path] = lines
        return lines


def _copy_lines(sandbox: Sandbox, path: str) -> list[str] | None:
    text = _read_text(sandbox, path)
    return None if text is None else text.splitlines()


def _read_text(sandbox: Sandbox, path: str) -> str | None:
    """A small workspace file's text, or None when it is missing, a directory or large."""
    with tempfile.TemporaryDirectory(prefix="conveyor-scan-file-") as tmp:
        local = Path(tmp) / "file"
        try:
            sandbox.copy_out(path, local)
        except (SandboxError, OSError):
            return None
        if not local.is_file() or local.stat().st_size > MAX_SOURCE_BYTES:
            return None
        return local.read_text("utf-8", errors="replace")


def outputs_of(result: ScanResult, limit: int = 50) -> dict[str, Any]:
    """The ``scan_result`` output: the summary, the gate and the worst findings (compact)."""
    worst = sorted((f for f in result.findings if not f.suppressed), key=lambda f: -f.severity.rank)
    compact = [
        {
            "rule_id": f.rule_id,
            "severity": f.severity.value,
            "location": f.location,
            "line": f.line,
            "fingerprint": f.fingerprint,
            "new": f.new,
        }
        for f in worst[:limit]
    ]
    return {
        "scanner": result.scanner,
        "summary": result.summary.model_dump(),
        "passed_gate": result.passed_gate,
        "findings": compact,
        "findings_total": len(result.findings),
    }
