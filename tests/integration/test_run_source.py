"""``conveyor run FILE --source DIR``: the run's first step finds DIR in its workspace."""

from __future__ import annotations

import os
from pathlib import Path

from tests.integration.clirun import Cli

PIPELINE = """
pipelines:
  ci:
    steps:
      - name: first
        type: step.shell_exec
        config:
          commands:
            - cat app.py lib/util.py
            - test -L link && echo "link -> $(readlink link)"
            - ls -A | tr '\\n' ' '
"""


def project(root: Path) -> Path:
    """A checkout: code, a link, and a .git, a .venv and a cache that stay behind."""
    for name, text in {
        "app.py": "print('app')\n",
        "lib/util.py": "UTIL = 1\n",
        ".git/config": "[core]\n",
        ".venv/pyvenv.cfg": "home = x\n",
        "lib/__pycache__/util.cpython-311.pyc": "",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    os.symlink("app.py", root / "link")
    return root


def test_the_source_is_in_the_workspace_before_the_first_step(tmp_path: Path) -> None:
    # Given a project and a pipeline whose first step reads it
    cli = Cli(tmp_path / "user")
    project(cli.workdir / "project")
    cli.write("ci.yaml", PIPELINE)
    # When it runs with the project as its source
    result = cli("run", "ci.yaml", "--source", "project")
    # Then the first step saw the code and the link, and none of what stays behind
    assert result.code == 0, result.output
    with cli.store() as store:
        lines = [line.text for line in store.list_logs(result.run_id, "first")]
    assert "print('app')" in lines
    assert "UTIL = 1" in lines
    assert "link -> app.py" in lines
    listing = lines[-1].split()
    assert sorted(listing) == [".conveyor", "app.py", "lib", "link"]
    # And the copy went with the run's workspace
    assert not (cli.data_dir / "workspaces" / result.run_id).exists()


def test_a_source_that_is_not_a_directory_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "user")
    cli.write("ci.yaml", PIPELINE)
    cli.write("file.txt", "x")
    for source in ("missing", "file.txt"):
        result = cli("run", "ci.yaml", "--source", source)
        assert result.code == 2, result.output
        assert "--source" in result.stderr
    assert cli.count_rows("workflow_instances") == 0
