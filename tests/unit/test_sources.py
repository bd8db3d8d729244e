"""A run's source: copied into its workspace before its first step (``--source``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.orchestrator.contracts import StepRef
from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.engine.sources import HeldDispatches, copy_source
from conveyor.orchestrator.errors import ConveyorError
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.engine_kit import log_text, open_engine, pipeline, run, statuses


def tree(root: Path) -> Path:
    """A small project: code, a nested package, and what a checkout would not bring."""
    for name, text in {
        "app.py": "print('hi')\n",
        "pkg/mod.py": "x = 1\n",
        ".gitignore": "dist/\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/bin/python": "",
        "pkg/__pycache__/mod.cpython-311.pyc": "",
        ".conveyor/conveyor.db": "",
    }.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_code_is_copied_without_what_a_checkout_would_not_bring(tmp_path: Path) -> None:
    source = tree(tmp_path / "src")
    copied = copy_source(source, tmp_path / "ws")
    assert listing(tmp_path / "ws") == [".gitignore", "app.py", "pkg", "pkg/mod.py"]
    assert copied == 4


def test_links_are_copied_as_links_and_never_followed(tmp_path: Path) -> None:
    # Given links inside the source, one to a file outside it
    source = tree(tmp_path / "src")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the run\n")
    (source / "inside").symlink_to("app.py")
    (source / "outside").symlink_to(secret)
    (source / "linked-dir").symlink_to(tmp_path)
    # When it is copied
    copy_source(source, tmp_path / "ws")
    # Then the links are links still, and nothing outside the source was read
    ws = tmp_path / "ws"
    assert os.readlink(ws / "inside") == "app.py"
    assert os.readlink(ws / "outside") == str(secret)
    assert (ws / "linked-dir").is_symlink()
    regular = [p for p in ws.rglob("*") if p.is_file() and not p.is_symlink()]
    assert all(p.read_text() != "not for the run\n" for p in regular)


def test_pipes_are_left_out_rather_than_block(tmp_path: Path) -> None:
    source = tree(tmp_path / "src")
    os.mkfifo(source / "pipe")
    copy_source(source, tmp_path / "ws")
    assert not (tmp_path / "ws" / "pipe").exists()


def test_the_data_directory_inside_the_source_is_not_copied_into_itself(tmp_path: Path) -> None:
    source = tree(tmp_path / "src")
    data = source / "state"
    (data / "workspaces" / "run1").mkdir(parents=True)
    copy_source(source, data / "workspaces" / "run1", exclude=[data])
    assert "state" not in listing(data / "workspaces" / "run1")


def test_a_source_that_is_no_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConveyorError, match="is not a directory"):
        copy_source(tmp_path / "file", tmp_path / "ws")


def sent(dispatcher: MemoryDispatcher) -> list[str]:
    """What ``dispatcher`` was asked to send, as ``run/step`` each."""
    return [f"{ref.run_id}/{ref.step_key}" for ref, _ in dispatcher.sent]


def ref(run_id: str, step: str = "a") -> StepRef:
    return StepRef(run_id, step, 1, "sandbox")


def test_held_dispatches_wait_for_their_run_only() -> None:
    # Given every dispatch held while run r1 is created
    inner = MemoryDispatcher()
    held = HeldDispatches(inner)
    held.hold()
    held.dispatch(ref("r1"))
    held.dispatch(ref("r2"))
    # When r1 is kept back, Then others go at once, and r1's wait for its release
    held.keep("r1")
    assert sent(inner) == ["r2/a"]
    held.dispatch(ref("r1", "b"))
    assert sent(inner) == ["r2/a"]
    held.release("r1")
    assert sent(inner) == ["r2/a", "r1/a", "r1/b"]
    held.dispatch(ref("r1", "c"))
    assert sent(inner)[-1] == "r1/c"


def test_dropped_dispatches_are_never_sent() -> None:
    inner = MemoryDispatcher()
    held = HeldDispatches(inner)
    held.hold()
    held.dispatch(ref("r1"))
    held.keep("r1")
    held.drop("r1")
    assert sent(inner) == []


def test_the_first_step_finds_the_source_in_the_workspace(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a project and a pipeline whose first step reads it
    source = tree(tmp_path / "project")
    text = pipeline("""
        - name: list
          type: step.shell_exec
          config: {commands: ["cat app.py pkg/mod.py", "test ! -e .git"]}
    """)
    # When the engine runs it with the project as its source
    with open_engine(settings) as engine:
        engine.workspace_source = source
        record = run(engine, text)
        # Then the step saw the code, and the workspace is gone with the run
        assert record.status == "succeeded", record.error
        assert log_text(engine, record.id, "list")[1:3] == ["print('hi')", "x = 1"]
    assert not (settings.workspace_root / record.id).exists()


def test_a_copy_that_fails_cancels_the_run_before_any_step(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    text = pipeline("- {name: a, type: step.shell_exec, config: {commands: [touch ran]}}")
    with open_engine(settings) as engine:
        engine.workspace_source = tmp_path / "file"
        compiled = engine.compile(text)
        with pytest.raises(ConveyorError, match="is not a directory"):
            engine.start(compiled.select(None), compiled.source)
        (found,) = engine.store.list_runs()
        assert found.status == "cancelled"
        assert "is not a directory" in (found.error or "")
        assert statuses(engine, found.id) == {"a": "cancelled"}


def test_engines_without_a_source_start_runs_as_before(engine: EmbeddedEngine) -> None:
    record = run(engine, pipeline("- {name: a, type: step.shell_exec, config: {commands: [ls]}}"))
    assert record.status == "succeeded"
