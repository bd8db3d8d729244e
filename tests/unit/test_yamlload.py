"""Loading pipeline YAML safely, with the line of every value for error messages."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import yaml

from conveyor.orchestrator.errors import SpecError
from conveyor.orchestrator.pipeline import yamlload
from conveyor.orchestrator.pipeline.yamlload import Loaded, load_yaml

PIPELINE = """\
pipelines:
  build-and-deploy:
    timeout: 30m
    env: {GO_VERSION: "1.25"}
    steps:
      - name: test
        type: step.shell_exec
        config:
          commands: [go test ./...]
      - name: image
        needs: [test]
"""


def problem_of(text: str | bytes, **limits: Any) -> tuple[str, int | None]:
    """Load ``text`` expecting a SpecError; return its message and line."""
    with pytest.raises(SpecError) as error:
        load_yaml(text, **limits)
    (problem,) = error.value.problems
    return str(problem), problem.line


# --- data and lines ------------------------------------------------------------------


def test_a_pipeline_loads_as_plain_data() -> None:
    loaded = load_yaml(PIPELINE)
    steps = loaded.data["pipelines"]["build-and-deploy"]["steps"]
    assert loaded.data["pipelines"]["build-and-deploy"]["env"] == {"GO_VERSION": "1.25"}
    assert steps == [
        {"name": "test", "type": "step.shell_exec", "config": {"commands": ["go test ./..."]}},
        {"name": "image", "needs": ["test"]},
    ]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 1),
        (("pipelines",), 1),
        (("pipelines", "build-and-deploy", "timeout"), 3),
        (("pipelines", "build-and-deploy", "env", "GO_VERSION"), 4),
        (("pipelines", "build-and-deploy", "steps"), 5),
        (("pipelines", "build-and-deploy", "steps", 0), 6),
        (("pipelines", "build-and-deploy", "steps", 0, "config", "commands", 0), 9),
        (("pipelines", "build-and-deploy", "steps", 1, "needs"), 11),
        # a path the file does not have: the nearest ancestor it does
        (("pipelines", "build-and-deploy", "steps", 1, "config", "image"), 10),
        (("pipelines", "build-and-deploy", "retry"), 2),
        (("nothing", "here"), 1),
    ],
)
def test_line_of_a_path(path: tuple[str | int, ...], line: int) -> None:
    assert load_yaml(PIPELINE).line_of(path) == line


def test_a_block_value_has_the_line_of_its_key() -> None:
    # Given a key whose value starts on the next line
    loaded = load_yaml("a: 1\nconfig:\n  image: x\n")
    # Then errors about it point at the key the user wrote
    assert loaded.line_of(("config",)) == 2
    assert loaded.line_of(["config", "image"]) == 3


def test_line_of_in_an_empty_document_is_unknown() -> None:
    assert Loaded(None, {}).line_of(("a",)) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("v: true", True),
        ("v: 1", 1),
        ("v: 1.5", 1.5),
        ("v: null", None),
        ("v: ~", None),
        ("v: '1.25'", "1.25"),
        ("v: 2024-05-01", datetime.date(2024, 5, 1)),
        ("v: 0x1f", 31),
        ("v: |\n  one\n  two\n", "one\ntwo\n"),
        ("v: [a, {b: 1}]", ["a", {"b": 1}]),
    ],
)
def test_scalars_resolve_as_safe_load_does(text: str, value: Any) -> None:
    assert load_yaml(text).data == {"v": value}


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("on: push\n1: one\ntrue: yes\n", {"on": "push", "1": "one", "true": True}),
        ("'quoted': 1\n", {"quoted": 1}),
    ],
)
def test_keys_are_the_text_written(text: str, data: dict[str, Any]) -> None:
    # YAML 1.1 would make `on:` the key True; a pipeline means the word
    assert load_yaml(text).data == data


def test_anchors_aliases_and_merge_keys_work() -> None:
    text = (
        "defaults: &d {image: golang, timeout: 5m}\nsteps:\n  - <<: *d\n    timeout: 10m\n  - *d\n"
    )
    assert load_yaml(text).data["steps"] == [
        {"image": "golang", "timeout": "10m"},
        {"image": "golang", "timeout": "5m"},
    ]


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("", None),
        ("# only a comment\n", None),
        ("---\na: 1\n", {"a": 1}),
        ("---\na: 1\n...\n", {"a": 1}),
    ],
)
def test_empty_files_and_document_markers(text: str, data: Any) -> None:
    assert load_yaml(text).data == data


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b"a: caf\xc3\xa9\n", {"a": "café"}),
        (b"\xef\xbb\xbfa: 1\n", {"a": 1}),
        ("\ufeffa: 1", {"a": 1}),
    ],
)
def test_bytes_are_utf8_and_a_bom_is_ignored(raw: str | bytes, data: Any) -> None:
    assert load_yaml(raw).data == data


# --- problems ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        (
            "a: 1\nb:\n  c: d: e\n",
            "invalid YAML at column 7: mapping values are not allowed",
            3,
        ),
        (
            "a:\n\tb: 1\n",
            "invalid YAML at column 1: found character that cannot start any token",
            2,
        ),
        ("a: [1, 2\n", "invalid YAML", 2),
        ("a: 'open\n", "invalid YAML", 2),
        ("steps: 1\nname: x\nsteps: 2\n", "duplicate key 'steps' (line 3)", 3),
        ("a:\n  b: 1\n  c: 2\n  b: 3\n", "duplicate key 'b' (line 4)", 4),
        ("a: 1\n---\nb: 2\n", "one YAML document per file; a second one starts (line 2)", 2),
        ("a: &x [1, *x]\n", "recursive alias", 1),
        ("a: !Ref x\n", "the tag !Ref is not supported (line 1)", 1),
        (
            "a: !!python/object/apply:os.system [ls]\n",
            "python/object/apply:os.system is not supported",
            1,
        ),
        ("a: !Custom {b: 1}\n", "the tag !Custom is not supported (line 1)", 1),
        ("a: 1\nb: !!python/name:os.system ''\n", "tag !!python/name:os.system is not", 2),
        ("a: !!set {x}\n", "the tag !!set is not supported (line 1)", 1),
        ("a: !!int abc\n", "'abc' is not a valid !!int (line 1)", 1),
        ("a: !!timestamp soon\n", "'soon' is not a valid !!timestamp (line 1)", 1),
        ("? [a, b]\n: 1\n", "a mapping key must be a plain value (line 1)", 1),
        ("a: 1\nb: \x00\n", "control characters are not allowed: U+0000 (line 2)", 2),
    ],
)
def test_problems_name_their_line(text: str, message: str, line: int) -> None:
    found, found_line = problem_of(text)
    assert message in found
    assert found_line == line


_ALIAS_CHAIN = "\n".join(["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 600)])


@pytest.mark.parametrize("parser", ["libyaml", "pure Python"])
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[" * 100_000 + "]" * 100_000, 1),  # libyaml's scanner has a limit of its own
        ("x: 1\ny: 2\nz: " + "[" * 5000 + "]" * 5000, 3),
        ("{a: " * 300 + "1" + "}" * 300, 1),
        ("a:\n  b: [" + "{c: [" * 120 + "]}" * 120 + "]\n", 2),
        ("".join("  " * i + "-\n" for i in range(300)), 201),
        (_ALIAS_CHAIN, 198),  # aliases of aliases nest as deep as brackets do
    ],
)
def test_deep_nesting_is_one_line_naming_its_line(
    text: str, line: int, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever layer notices the nesting first (Conveyor, libyaml, the pure-Python
    parser of an install without libyaml, the builder), the error is the same contract:
    one line, Conveyor's words, the line it is on."""
    if parser == "pure Python":
        monkeypatch.setattr(yamlload, "_Loader", yaml.SafeLoader)

    with pytest.raises(SpecError) as error:
        load_yaml(text)

    message = str(error.value)
    assert "\n" not in message and message.endswith(f"(line {line})")
    assert [p.line for p in error.value.problems] == [line]
    assert message.startswith("YAML is nested more than 200 levels deep")


def test_merged_keys_are_not_duplicates() -> None:
    # A key given again next to a merge overrides the merged one, as in YAML
    assert load_yaml("b: &b {x: 1}\nc: {<<: *b, x: 2}\n").data["c"] == {"x": 2}


def test_a_billion_laughs_is_refused_cheaply() -> None:
    # Given nine levels of aliases, each repeating the last ten times (10**9 nodes)
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, 10):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    # When it is loaded, then it is refused before anything is expanded
    message, _ = problem_of("\n".join(lines))
    assert message == "YAML expands to more than 200000 nodes (aliases used as a bomb?)"


def test_aliases_count_towards_the_node_limit() -> None:
    text = "a: &a [1, 2, 3, 4]\nb: [*a, *a, *a]\n"
    assert load_yaml(text, max_nodes=100).data["b"] == [[1, 2, 3, 4]] * 3
    message, _ = problem_of(text, max_nodes=10)
    assert "more than 10 nodes" in message


@pytest.mark.parametrize(
    ("text", "max_bytes", "message"),
    [
        ("x" * (10 * 1_048_576 + 1), 1_048_576, "pipeline file is 10.0 MB; the limit is 1.0 MB"),
        ("a: " + "x" * 3000, 2048, "pipeline file is 2.9 KB; the limit is 2.0 KB"),
        (b"a: 1\n" * 30, 100, "pipeline file is 150 bytes; the limit is 100 bytes"),
    ],
)
def test_files_over_the_size_limit_are_refused(
    text: str | bytes, max_bytes: int, message: str
) -> None:
    assert problem_of(text, max_bytes=max_bytes)[0] == message


def test_bytes_that_are_not_utf8_are_refused() -> None:
    message, line = problem_of(b"a: 1\nb: caf\xe9\n")
    assert (message, line) == ("the file is not UTF-8 text (byte 0xe9) (line 2)", 2)


def test_the_source_names_the_file() -> None:
    message, _ = problem_of("a: 1\na: 2\n", source="ci.yaml")
    assert message == "ci.yaml: duplicate key 'a' (line 2)"
