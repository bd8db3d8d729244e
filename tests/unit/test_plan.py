"""Compiling pipeline files: structure, step configs, templates, needs, matrices, limits."""

from __future__ import annotations

import textwrap

import pytest

from conveyor.orchestrator.errors import SpecError
from conveyor.orchestrator.pipeline.plan import Compiler, Limits
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.plugins import StepTypes


@pytest.fixture(scope="module")
def compiler() -> Compiler:
    return Compiler(StepTypes(), TemplateEngine(), Limits(max_steps=50, max_matrix=10))


def problems(compiler: Compiler, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        compiler.compile(textwrap.dedent(text))
    return [str(p) for p in info.value.problems]


def test_a_missing_config_field_is_named_with_its_path_and_line(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - name: a
            type: step.log
            config: {message: hi}
          - name: b
            type: step.log
            config: {message: hi}
          - name: build
            type: step.shell_exec
            config:
              work_dir: /workspace
    """
    assert problems(compiler, text) == [
        "pipelines.ci.steps[2].config.commands: field required (line 12)"
    ]


def test_unknown_keys_are_errors_everywhere(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        timout: 5m
        steps:
          - name: a
            type: step.log
            nedds: []
            config: {message: hi, colour: red}
    """
    assert problems(compiler, text) == [
        "pipelines.ci.timout: unknown key (line 3)",
        "pipelines.ci.steps[0].nedds: unknown key (line 7)",
    ]


def test_config_problems_of_every_step_are_reported_together(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: a, type: step.log, config: {message: hi, colour: red}}
          - {name: b, type: step.nope}
          - {name: c, type: step.shell_exec, config: {commands: "not a list"}}
    """
    found = problems(compiler, text)
    assert found[0] == "pipelines.ci.steps[0].config.colour: unknown key (line 4)"
    assert found[1].startswith("pipelines.ci.steps[1].type: unknown step type 'step.nope' (known: ")
    assert "step.shell_exec" in found[1]
    assert found[2].startswith("pipelines.ci.steps[2].config.commands: ")


def test_templated_values_are_checked_when_rendered_not_when_compiled(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: a, type: step.shell_exec, config: {commands: ["true"], timeout: "{{ .limit }}"}}
    """
    plan = compiler.compile(textwrap.dedent(text)).select(None)
    assert plan.steps[0].config["timeout"] == "{{ .limit }}"


def test_template_syntax_errors_name_the_field(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - name: a
            type: step.log
            config:
              message: "{{ .steps.x "
    """
    (problem,) = problems(compiler, text)
    assert problem.startswith("pipelines.ci.steps[0].config.message: template error: ")
    assert problem.endswith("(line 7)")


def test_needs_default_to_the_previous_step_and_empty_needs_start_at_once(
    compiler: Compiler,
) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: a, type: step.log, config: {message: a}}
          - {name: b, type: step.log, config: {message: b}}
          - {name: c, type: step.log, needs: [], config: {message: c}}
          - {name: d, type: step.log, needs: [a, c], config: {message: d}}
    """
    plan = compiler.compile(textwrap.dedent(text)).select("ci")
    assert {s.key: s.needs for s in plan.steps} == {"a": (), "b": ("a",), "c": (), "d": ("a", "c")}


def test_steps_are_ordered_so_each_follows_its_needs(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: deploy, type: step.log, needs: [build], config: {message: x}}
          - {name: build, type: step.log, needs: [], config: {message: x}}
    """
    plan = compiler.compile(textwrap.dedent(text)).select(None)
    assert [s.key for s in plan.steps] == ["build", "deploy"]


def test_a_needs_cycle_names_its_steps(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: a, type: step.log, needs: [c], config: {message: x}}
          - {name: b, type: step.log, needs: [a], config: {message: x}}
          - {name: c, type: step.log, needs: [b], config: {message: x}}
    """
    (problem,) = problems(compiler, text)
    assert problem.startswith("pipelines.ci.steps: `needs` form a cycle: ")
    assert all(name in problem for name in ("a", "b", "c"))


def test_unknown_and_duplicate_step_names_are_errors(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - {name: a, type: step.log, config: {message: x}}
          - {name: a, type: step.log, config: {message: x}}
          - {name: b, type: step.log, needs: [biuld], config: {message: x}}
    """
    assert problems(compiler, text) == [
        "pipelines.ci.steps[1].name: duplicate step name 'a' (line 5)",
        "pipelines.ci.steps[2].needs[0]: unknown step 'biuld' (steps are: a, b) (line 6)",
    ]


def test_a_matrix_expands_into_one_step_per_combination(compiler: Compiler) -> None:
    text = """\
    pipelines:
      ci:
        steps:
          - name: test
            type: step.log
            matrix: {py: ["3.11", "3.12"], db: [lite, pg], exclude: [{py: "3.11", db: pg}]}
            config: {message: "{{ .matrix.py }}"}
          - {name: done, type: step.log, config: {message: x}}
    """
    plan = compiler.compile(textwrap.dedent(text)).select(None)
    keys = ["test[py=3.11,db=lite]", "test[py=3.12,db=lite]", "test[py=3.12,db=pg]"]
    assert [s.key for s in plan.steps] == [*keys, "done"]
    assert plan.step("test[py=3.12,db=pg]").matrix == {"py": "3.12", "db": "pg"}
    assert plan.step("done").needs == tuple(keys)


def test_limits_on_steps_and_matrices(compiler: Compiler) -> None:
    many = "\n".join(
        f"      - {{name: s{i}, type: step.log, config: {{message: x}}}}" for i in range(51)
    )
    (problem,) = problems(compiler, f"pipelines:\n  big:\n    steps:\n{many}\n")
    assert problem.startswith("pipelines.big: 51 steps; the limit is 50")
    text = """\
    pipelines:
      ci:
        steps:
          - {name: t, type: step.log, matrix: {a: [1, 2, 3, 4], b: [1, 2, 3]}, config: {message: x}}
    """
    assert problems(compiler, text) == [
        "pipelines.ci.steps[0].matrix: expands to 12 steps; the limit is 10 (line 4)"
    ]


def test_ignored_top_level_keys_are_reported_not_crashed_on(compiler: Compiler) -> None:
    text = """\
    modules:
      - {name: http, type: http.server}
    triggers: []
    pipelines:
      ci:
        steps:
          - {name: a, type: step.log, config: {message: x}}
    """
    compiled = compiler.compile(textwrap.dedent(text))
    assert [w.split("`")[1] for w in compiled.warnings] == ["modules", "triggers"]


def test_choosing_a_pipeline(compiler: Compiler) -> None:
    text = """\
    pipelines:
      one: {steps: [{name: a, type: step.log, config: {message: x}}]}
      two: {steps: [{name: a, type: step.log, config: {message: x}}]}
    """
    compiled = compiler.compile(textwrap.dedent(text))
    assert compiled.select("two").pipeline == "two"
    with pytest.raises(
        SpecError, match=r"several pipelines \(one, two\): choose one with --pipeline"
    ):
        compiled.select(None)
    with pytest.raises(SpecError, match="no pipeline 'three'"):
        compiled.select("three")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pipelines: [", "line"),
        ("- just\n- a list\n", "a pipeline file is a mapping"),
        ("pipelines: {}\n", "pipelines"),
        ("pipelines: {ci: {steps: []}}\n", "pipelines.ci.steps"),
        (
            "pipelines: {ci: {timeout: forever, steps: [{name: a, type: step.log, config: {message: x}}]}}\n",
            "pipelines.ci.timeout",
        ),
        (
            "pipelines: {ci: {steps: [{name: 'bad name!', type: step.log}]}}\n",
            "pipelines.ci.steps[0].name",
        ),
    ],
)
def test_malformed_files_are_clear_errors(compiler: Compiler, text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        compiler.compile(text)
    assert expected in str(info.value)


def test_the_seed_format_compiles(compiler: Compiler) -> None:
    text = """\
    pipelines:
      build:
        timeout: 30m
        env: {GO_VERSION: "1.25", RETRIES: 3}
        on_error: continue
        steps:
          - name: test
            type: step.shell_exec
            timeout: 300s
            if: "{{ eq .branch \\"main\\" }}"
            config: {commands: [go test ./...], work_dir: /workspace, timeout: 300s, env: {CGO_ENABLED: "0"}}
    """
    plan = compiler.compile(textwrap.dedent(text)).select(None)
    assert (plan.timeout, plan.env, plan.steps[0].timeout) == (
        1800.0,
        {"GO_VERSION": "1.25", "RETRIES": "3"},
        300.0,
    )
    assert plan.steps[0].on_error == "continue" and plan.steps[0].queue == "sandbox"
