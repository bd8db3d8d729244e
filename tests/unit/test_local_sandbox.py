"""The local sandbox, with real processes: workspace, streaming, limits, env, paths."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import Sandbox, SandboxConfig, SandboxRequest
from conveyor.orchestrator.errors import SandboxError, StepCancelled, StepTimeout
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local import LocalSandbox, LocalSandboxFactory
from conveyor.providers.sandbox_common import LineSplitter, parse_memory

#: Generous: every kill below should take well under this.
QUICK = 5.0


@pytest.fixture
def factory(settings: Settings) -> LocalSandboxFactory:
    return LocalSandboxFactory(settings)


def request(
    run_id: str = "run-1",
    step: str = "build",
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    **config: Any,
) -> SandboxRequest:
    return SandboxRequest(
        run_id, step, SandboxConfig(**config), cancel or threading.Event(), deadline
    )


def output(sandbox: Sandbox, script: str, **kwargs: Any) -> list[str]:
    lines: list[str] = []
    result = sandbox.exec(script, on_line=lines.append, **kwargs)
    assert result.exit_code == 0, lines
    return lines


# --- workspace ---------------------------------------------------------------------


def test_the_local_sandbox_satisfies_the_sandbox_protocol(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request())
    assert isinstance(sandbox, Sandbox)
    assert isinstance(sandbox, LocalSandbox)


def test_steps_of_one_run_share_the_workspace(factory: LocalSandboxFactory) -> None:
    # Given a file written by one step's sandbox
    first = factory.open(request(step="build"))
    output(first, "mkdir -p dist && echo built > dist/app.txt")
    first.close()
    # When a later step of the same run opens its own sandbox
    second = factory.open(request(step="test"))
    # Then it sees the file, in the same workspace directory
    assert output(second, "cat dist/app.txt") == ["built"]
    assert second.workspace == first.workspace
    assert Path(second.workspace).is_absolute()


def test_runs_do_not_share_workspaces(factory: LocalSandboxFactory) -> None:
    output(factory.open(request(run_id="run-a")), "touch only-in-a")
    other = factory.open(request(run_id="run-b"))
    assert output(other, "ls") == []


def test_cleanup_removes_the_workspace_and_is_safe_twice(
    factory: LocalSandboxFactory, settings: Settings
) -> None:
    sandbox = factory.open(request())
    output(sandbox, "mkdir -p a/b && touch a/b/c")
    sandbox.close()
    factory.cleanup_run("run-1")
    factory.cleanup_run("run-1")
    assert not (settings.workspace_root / "run-1").exists()


def test_close_is_idempotent_keeps_the_workspace_and_refuses_more_work(
    factory: LocalSandboxFactory,
) -> None:
    sandbox = factory.open(request())
    output(sandbox, "touch kept")
    sandbox.close()
    sandbox.close()
    assert (Path(sandbox.workspace) / "kept").exists()
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true")


def test_close_from_another_thread_kills_a_running_command(
    factory: LocalSandboxFactory,
) -> None:
    sandbox = factory.open(request())
    started = time.monotonic()
    threading.Timer(0.3, sandbox.close).start()
    with pytest.raises(SandboxError, match="closed while a command ran"):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < QUICK


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "..", ""])
def test_a_run_id_that_is_not_a_plain_name_is_refused(
    factory: LocalSandboxFactory, run_id: str
) -> None:
    with pytest.raises(SandboxError, match="cannot name a workspace"):
        factory.open(request(run_id=run_id))


# --- output ------------------------------------------------------------------------


def test_stdout_and_stderr_lines_arrive_in_order(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request())
    lines = output(sandbox, "echo one; echo two >&2; echo three; printf 'four'")
    assert lines == ["one", "two", "three", "four"]


def test_lines_stream_while_the_command_is_still_running(
    factory: LocalSandboxFactory,
) -> None:
    # Given a command that waits for a file only the line callback creates
    sandbox = factory.open(request(timeout="10s"))
    go = Path(sandbox.workspace) / "go"

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "waiting":
            go.touch()

    seen: list[str] = []
    # When it runs, Then the first line reached us before it finished
    script = "echo waiting; while [ ! -e go ]; do sleep 0.05; done; echo done"
    result = sandbox.exec(script, on_line=on_line)
    assert (result.exit_code, seen) == (0, ["waiting", "done"])


def test_the_result_carries_the_last_twenty_lines(factory: LocalSandboxFactory) -> None:
    result = factory.open(request()).exec("seq 1 50")
    assert result.tail == [str(n) for n in range(31, 51)]
    assert result.duration >= 0


def test_very_long_lines_are_split_at_64_kib(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request())
    lines = output(sandbox, "head -c 200000 /dev/zero | tr '\\0' a; echo; echo end")
    assert [len(line) for line in lines] == [65536, 65536, 65536, 3392, 3]


def test_invalid_utf8_is_replaced_not_fatal(factory: LocalSandboxFactory) -> None:
    lines = output(factory.open(request()), "printf 'caf\\351\\n'")
    assert lines == ["caf\ufffd"]


@pytest.mark.parametrize(("script", "code"), [("exit 3", 3), ("true", 0), ("kill -9 $$", 137)])
def test_the_exit_code_is_the_shells(factory: LocalSandboxFactory, script: str, code: int) -> None:
    assert factory.open(request()).exec(script).exit_code == code


def test_a_command_that_closes_its_output_still_runs_to_the_end(
    factory: LocalSandboxFactory,
) -> None:
    result = factory.open(request()).exec("exec >/dev/null 2>&1; sleep 0.2; exit 4")
    assert result.exit_code == 4


def test_a_background_child_holding_the_pipe_does_not_hang_exec(
    factory: LocalSandboxFactory,
) -> None:
    started = time.monotonic()
    lines: list[str] = []
    result = factory.open(request()).exec("sleep 100 & echo done", on_line=lines.append)
    assert (result.exit_code, lines) == (0, ["done"])
    assert time.monotonic() - started < QUICK


# --- timeout and cancel ------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        "sleep 30",
        "trap '' TERM; sleep 30",  # ignores SIGTERM: needs the SIGKILL
        "sleep 30 & sleep 30",  # a background child holds the pipe
        "(trap '' TERM; sleep 30) & wait",
    ],
)
def test_a_timeout_kills_the_whole_command(factory: LocalSandboxFactory, script: str) -> None:
    sandbox = factory.open(request(timeout=0.5))
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="timed out after 500ms"):
        sandbox.exec(script)
    assert time.monotonic() - started < QUICK


def test_the_steps_deadline_kills_the_command_too(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request(deadline=time.monotonic() + 0.5))
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="timed out"):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < QUICK


def test_a_timeout_already_folded_into_the_deadline_is_still_named(
    factory: LocalSandboxFactory,
) -> None:
    # Given a runtime that put the step's 500ms timeout into the deadline as well
    sandbox = factory.open(request(timeout=0.5, deadline=time.monotonic() + 0.5))
    with pytest.raises(StepTimeout, match="timed out after 500ms"):
        sandbox.exec("sleep 30")


def test_an_earlier_step_deadline_wins_over_the_sandbox_timeout(
    factory: LocalSandboxFactory,
) -> None:
    sandbox = factory.open(request(timeout=60, deadline=time.monotonic() + 0.5))
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="the step's time limit passed"):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < QUICK


def test_cancel_from_another_thread_stops_the_command(factory: LocalSandboxFactory) -> None:
    cancel = threading.Event()
    sandbox = factory.open(request(cancel=cancel))
    started = time.monotonic()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(StepCancelled, match="cancelled"):
        sandbox.exec("sleep 30")
    assert time.monotonic() - started < QUICK


def test_nothing_starts_once_cancelled_or_past_the_deadline(
    factory: LocalSandboxFactory,
) -> None:
    cancel = threading.Event()
    cancelled = factory.open(request(cancel=cancel))
    cancel.set()
    with pytest.raises(StepCancelled):
        cancelled.exec("touch started")
    late = factory.open(request(deadline=time.monotonic() - 1))
    with pytest.raises(StepTimeout):
        late.exec("touch started")
    assert not (Path(late.workspace) / "started").exists()


# --- environment -------------------------------------------------------------------


def test_the_host_environment_does_not_leak_in(
    factory: LocalSandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an orchestrator credential in the host environment
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://admin:hunter2@db/conveyor")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    # When a command prints its environment
    text = "\n".join(output(factory.open(request()), "env"))
    # Then the credentials are not there
    assert "hunter2" not in text
    assert "very-secret" not in text


def test_commands_see_the_ci_variables(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request(run_id="run-7", step="lint"))
    script = 'echo "$CI $CONVEYOR_RUN_ID $CONVEYOR_STEP $CONVEYOR_WORKSPACE"'
    assert output(sandbox, script) == [f"true run-7 lint {sandbox.workspace}"]


def test_exec_env_overrides_config_env(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request(env={"A": "config", "B": "config"}))
    assert output(sandbox, 'echo "$A $B"', env={"B": "exec"}) == ["config exec"]


def test_a_bad_variable_name_is_a_sandbox_error(factory: LocalSandboxFactory) -> None:
    with pytest.raises(SandboxError):
        factory.open(request()).exec("true", env={"A=B": "x"})


# --- paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("work_dir", "relative"),
    [("src/app", "src/app"), ("/workspace", "."), ("/workspace/app", "app")],
)
def test_work_dir_maps_into_the_workspace(
    factory: LocalSandboxFactory, work_dir: str, relative: str
) -> None:
    sandbox = factory.open(request(work_dir=work_dir))
    expected = (Path(sandbox.workspace) / relative).resolve()
    assert output(sandbox, "pwd -P") == [str(expected)]


def test_exec_work_dir_overrides_the_configured_one(factory: LocalSandboxFactory) -> None:
    sandbox = factory.open(request(work_dir="a"))
    assert output(sandbox, "pwd -P", work_dir="/workspace/b") == [f"{sandbox.workspace}/b"]


@pytest.mark.parametrize("work_dir", ["/etc", "../elsewhere", "/workspaces/x", "a/../../.."])
def test_a_work_dir_outside_the_workspace_is_refused(
    factory: LocalSandboxFactory, work_dir: str
) -> None:
    with pytest.raises(SandboxError, match="outside the workspace"):
        factory.open(request(work_dir=work_dir))
    with pytest.raises(SandboxError, match="outside the workspace"):
        factory.open(request()).exec("true", work_dir=work_dir)


def test_files_and_directories_copy_in_and_out(
    factory: LocalSandboxFactory, tmp_path: Path
) -> None:
    # Given a host directory
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "nested" / "file.txt").write_text("hello")
    sandbox = factory.open(request())
    # When it is copied in and changed by a command
    sandbox.copy_in(src, "/workspace/input")
    output(sandbox, "echo changed >> input/nested/file.txt")
    # Then copying it back out shows the change
    sandbox.copy_out("input", tmp_path / "out")
    sandbox.copy_out("/workspace/input/nested/file.txt", tmp_path / "one.txt")
    assert (tmp_path / "out" / "nested" / "file.txt").read_text() == "hellochanged\n"
    assert (tmp_path / "one.txt").read_text() == "hellochanged\n"


@pytest.mark.parametrize("path", ["../secrets", "/etc/passwd", "link/passwd", "link"])
def test_copies_cannot_escape_the_workspace(
    factory: LocalSandboxFactory, tmp_path: Path, path: str
) -> None:
    # Given a symlink in the workspace that points outside it
    sandbox = factory.open(request())
    output(sandbox, "ln -s /etc link")
    (tmp_path / "f").write_text("x")
    with pytest.raises(SandboxError, match="outside the workspace"):
        sandbox.copy_out(path, tmp_path / "out")
    with pytest.raises(SandboxError, match="outside the workspace"):
        sandbox.copy_in(tmp_path / "f", path)


def test_copying_out_a_missing_file_says_so(factory: LocalSandboxFactory, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="does not exist"):
        factory.open(request()).copy_out("nothing-here", tmp_path / "out")


# --- what the local sandbox cannot do ----------------------------------------------


def test_an_image_needs_the_docker_sandbox(factory: LocalSandboxFactory) -> None:
    with pytest.raises(SandboxError, match="cannot run images"):
        factory.open(request(image="alpine:3.20"))


@pytest.mark.parametrize(
    "config",
    [
        {"mounts": [{"source": "/", "target": "/host"}]},
        {"network_mode": "none"},
        {"cpu_limit": 1.0},
    ],
)
def test_docker_only_settings_are_refused(
    factory: LocalSandboxFactory, config: dict[str, Any]
) -> None:
    with pytest.raises(SandboxError, match="needs the Docker sandbox"):
        factory.open(request(**config))


def test_a_memory_limit_stops_a_greedy_command(factory: LocalSandboxFactory) -> None:
    # Given a 64 MiB limit, When a command allocates 512 MiB, Then it fails
    sandbox = factory.open(request(memory_limit="64m"))
    greedy = f"{sys.executable} -c 'bytearray(512 * 1024 * 1024)'"
    assert sandbox.exec(greedy).exit_code != 0
    assert sandbox.exec(f"{sys.executable} -c 'bytearray(1024)'").exit_code == 0


@pytest.mark.parametrize(
    ("value", "size"),
    [("512m", 512 * 1024**2), ("1g", 1024**3), ("8MiB", 8 * 1024**2), (10**7, 10**7)],
)
def test_memory_limits_read_like_dockers(value: str | int, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize("value", ["lots", "512x", "1k", 0])
def test_a_bad_memory_limit_is_refused(factory: LocalSandboxFactory, value: str | int) -> None:
    with pytest.raises(SandboxError, match="memory_limit"):
        factory.open(request(memory_limit=value))


@pytest.mark.parametrize("split", [1, 4096, 65535, 65536, 65537, 68000, 200_001])
def test_a_long_line_is_cut_however_its_bytes_arrive(split: int) -> None:
    # A 68,928-byte line, then a short one, fed in two reads cut anywhere
    data = b"a" * 68928 + b"\n" + "é".encode() * 40000 + b"\nend\n"
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    splitter.feed(data[:split])
    splitter.feed(data[split:])
    splitter.flush()
    assert [len(line.encode()) for line in lines][:2] == [65536, 3392]
    assert all(len(line.encode()) <= 65536 for line in lines)
    assert "".join(lines[2:-1]) == "é" * 40000 and lines[-1] == "end"
