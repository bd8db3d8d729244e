"""Bad pipeline files and arguments: a clear short error, a non-zero exit, no traceback,
and nothing written to the store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .clirun import Cli, Result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command, in a fresh working directory with a fresh data directory."""
    return Cli(tmp_path)


def _steps(count: int) -> str:
    step = "      - name: s{i}\n        type: step.log\n        config: {{message: hi}}\n"
    return "pipelines:\n  many:\n    steps:\n" + "".join(step.format(i=i) for i in range(count))


def _alias_bomb() -> str:
    """The "billion laughs": ten levels of nine aliases each, 10**9 strings expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    lines.append("pipelines: {p: {steps: [{name: s, type: step.log, config: {message: *j}}]}}")
    return "\n".join(lines) + "\n"


def _directory(path: Path) -> str:
    path.mkdir()
    return path.name


GOOD_STEP = "      - name: s\n        type: step.log\n        config: {message: hi}\n"


@dataclass(frozen=True)
class Case:
    """A bad pipeline file (or path) and what the error must say."""

    content: str | bytes | Callable[[Path], str] | None
    expected: tuple[str, ...]
    max_lines: int = 3
    args: tuple[str, ...] = ()


CASES = {
    "malformed YAML": Case(
        "pipelines:\n  a:\n    steps:\n      - name: x\n        type: [step.log\n",
        ("invalid YAML", "(line "),
    ),
    "alias bomb": Case(_alias_bomb(), ("YAML expands to more than", "aliases")),
    "10 MB file": Case(
        "pipelines:\n  p:\n    steps:\n" + "#" * (10 * 1024 * 1024) + "\n",
        ("is 10.0 MB; the limit is 1.0 MB",),
    ),
    "10,000 steps": Case(_steps(10_000), ("pipelines.many: 10000 steps; the limit is 1000",)),
    "steps is a number": Case(
        "pipelines:\n  a:\n    steps: 5\n",
        ("pipelines.a.steps: input should be a valid list (line 3)",),
    ),
    "timeout is a list": Case(
        "pipelines:\n  a:\n    timeout: [1]\n    steps:\n" + GOOD_STEP,
        ("pipelines.a.timeout: a duration is", "(line 3)"),
    ),
    "config is a string": Case(
        "pipelines:\n  a:\n    steps:\n      - name: s\n        type: step.log\n"
        '        config: "x"\n',
        ("pipelines.a.steps[0].config: input should be a valid dictionary (line 6)",),
    ),
    "unknown step type": Case(
        "pipelines:\n  a:\n    steps:\n      - name: s\n        type: step.nope\n",
        ("pipelines.a.steps[0].type: unknown step type 'step.nope'", "step.shell_exec", "(line 5)"),
    ),
    "unknown key": Case(
        "pipelines:\n  a:\n    steps:\n" + GOOD_STEP + "        retries: 3\n",
        ("pipelines.a.steps[0].retries: unknown key (line 7)",),
    ),
    "template reaching __class__": Case(
        "pipelines:\n  a:\n    steps:\n      - name: s\n        type: step.log\n"
        "        config:\n          message: \"{{ ''.__class__.__mro__ }}\"\n",
        ("config.message: template error: not allowed: '__class__' is a Python internal",),
    ),
    "template reaching __globals__": Case(
        "pipelines:\n  a:\n    steps:\n      - name: s\n        type: step.shell_exec\n"
        '        config:\n          commands: ["echo {{ cycler.__init__.__globals__ }}"]\n',
        ("config.commands[0]: template error: not allowed: '__init__' is a Python internal",),
    ),
    "condition reaching __class__": Case(
        "pipelines:\n  a:\n    steps:\n" + GOOD_STEP + "        if: \"''.__class__\"\n",
        ("pipelines.a.steps[0].if: template error: not allowed: '__class__'",),
    ),
    "nonexistent file": Case(None, ("cannot read missing.yaml: No such file or directory",)),
    "directory": Case(
        lambda workdir: _directory(workdir / "pipelines"),
        ("'pipelines' is a directory",),
        max_lines=4,
    ),
    "non-UTF-8 bytes": Case(
        b"pipelines:\n  a:\n    steps:\n      - name: caf\xe9\n",
        ("not UTF-8 text (byte 0xe9) (line 4)",),
    ),
    "empty file": Case("", ("a pipeline file is a mapping with a `pipelines:` key",)),
    "duplicate keys": Case(
        "pipelines:\n  a:\n    steps:\n" + GOOD_STEP + "        type: step.set\n",
        ("duplicate key 'type' (line 7)",),
    ),
    "needs cycle": Case(
        "pipelines:\n  a:\n    steps:\n"
        "      - {name: x, type: step.log, needs: [y], config: {message: hi}}\n"
        "      - {name: y, type: step.log, needs: [x], config: {message: hi}}\n",
        ("`needs` form a cycle: x -> y -> x",),
    ),
    "two pipelines, none chosen": Case(
        "pipelines:\n  a:\n    steps:\n" + GOOD_STEP + "  b:\n    steps:\n" + GOOD_STEP,
        ("the file has several pipelines (a, b): choose one with --pipeline",),
    ),
    "--param without a value": Case(
        "pipelines:\n  a:\n    steps:\n" + GOOD_STEP,
        ("Invalid value for --param: 'who' is not NAME=VALUE",),
        max_lines=4,
        args=("--param", "who"),
    ),
}


def _path(cli: Cli, case: Case) -> str:
    if case.content is None:
        return "missing.yaml"
    if callable(case.content):
        return case.content(cli.workdir)
    cli.write("pipeline.yaml", case.content)
    return "pipeline.yaml"


def _assert_refused(cli: Cli, result: Result, case: Case) -> None:
    assert result.code != 0, result.output
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= case.max_lines, result.stderr
    for fragment in case.expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert not result.stdout.startswith("run "), result.output
    # Nothing reached the store: the database is not even created
    assert cli.count_rows("workflow_instances") == 0
    assert cli.count_rows("workflow_definitions") == 0
    assert not cli.database.exists()


@pytest.mark.parametrize("name", list(CASES))
def test_run_refuses_bad_input(cli: Cli, name: str) -> None:
    case = CASES[name]
    path = _path(cli, case)
    result = cli("run", path, *case.args)
    _assert_refused(cli, result, case)


@pytest.mark.parametrize(
    "name", ["malformed YAML", "alias bomb", "duplicate keys", "unknown step type", "needs cycle"]
)
def test_validate_refuses_bad_input_the_same_way(cli: Cli, name: str) -> None:
    case = CASES[name]
    result = cli("validate", _path(cli, case))
    assert result.code == 1
    _assert_refused(cli, result, case)


def test_a_problem_found_only_at_run_time_fails_its_step_readably(cli: Cli) -> None:
    # Given an attribute name the template builds while it renders, which no check can see
    cli.write(
        "sneaky.yaml",
        "pipelines:\n  a:\n    steps:\n      - name: s\n        type: step.log\n"
        "        config:\n          message: \"{{ ''['__cla' ~ 'ss__'] }}\"\n",
    )
    assert cli("validate", "sneaky.yaml").code == 0
    # When it runs, Then the sandbox refuses it and the step fails with a readable message
    result = cli("run", "sneaky.yaml")
    assert result.code == 1, result.output
    assert "Traceback" not in result.stderr
    message = "config.message: not allowed: access to attribute '__class__' of 'str' object"
    assert f"✗ step 's' failed: {message}" in result.stderr
    with cli.store() as store:
        (step,) = store.list_steps(result.run_id)
    assert step.status == "failed" and message in (step.last_error or "")
