"""Pipeline templates: the seed's Go forms and plain Jinja, shell text, conditions, limits."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest

from conveyor.orchestrator.errors import TemplateError
from conveyor.orchestrator.pipeline.templates import TemplateEngine, has_template, translate

CONTEXT: dict[str, Any] = {
    "version": "1.4.2",
    "Version": "1.4.2",
    "name": "Api",
    "env": "prod",
    "count": 3,
    "zero": 0,
    "empty": "",
    "nothing": None,
    "flag": True,
    "tags": ["a", "b"],
    "labels": {"tier": "web", "owner": "ops"},
    "steps": {
        "build": {"image_id": "sha256:abc", "passed": True, "items": 7},
        "test": {"exit_code": 0, "passed": "false"},
        "deploy-prod": {"url": "https://example.test"},
    },
    "params": {"x": "hello"},
    "matrix": {"python": "3.12"},
}


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


def render(engine: TemplateEngine, text: str, **extra: Any) -> str:
    return engine.render(text, {**CONTEXT, **extra})


def fails(engine: TemplateEngine, text: str, **extra: Any) -> str:
    """Render ``text`` expecting a TemplateError; return its message."""
    with pytest.raises(TemplateError) as error:
        render(engine, text, **extra)
    return error.value.message


# --- the seed's Go forms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ .steps.build.image_id }}", "sha256:abc"),
        ("myapp:{{ .Version }}", "myapp:1.4.2"),
        ("{{.version}}", "1.4.2"),
        ('{{ index .steps "deploy-prod" "url" }}', "https://example.test"),
        ('{{index .steps "deploy-prod" "url"}}', "https://example.test"),
        ("{{ index .tags 1 }}", "b"),
        ("{{ .name | lower }}", "api"),
        ("{{ lower .name }}", "api"),
        ("{{ upper .env }}", "PROD"),
        ('{{ .missing | default "n/a" }}', "n/a"),
        ('{{ default "pending" .empty }}', "pending"),
        ('{{ default "pending" .nothing }}', "pending"),
        ('{{ default "pending" .name }}', "Api"),
        ("{{ .zero | default 5 }}", "5"),  # sprig: 0 and false are empty too
        ('{{ .tags | default "none" }}', '["a","b"]'),
        ('{{ .steps.nope.status | default "skipped" }}', "skipped"),
        ('{{ .name | default "x" | upper }}', "API"),
        ("{{ json .labels }}", '{"tier":"web","owner":"ops"}'),
        ("{{ .tags | json }}", '["a","b"]'),
        ('{{ trim "  spaced  " }}', "spaced"),
        ('{{ replace "-" "_" "a-b-c" }}', "a_b_c"),
        ('{{ .env | replace "p" "P" }}', "Prod"),
        ('{{ contains "ro" .env }}', "true"),
        ('{{ hasPrefix "pr" .env }}', "true"),
        ('{{ hasSuffix "x" .env }}', "false"),
        ("{{ len .tags }}", "2"),
        ('{{ printf "%s-%03d" .name .count }}', "Api-003"),
        ('{{ printf "%v|%q|%t" .count .name .flag }}', '3|"Api"|true'),
        ('{{ .name | printf "<%s>" }}', "<Api>"),
        ('{{ print 1 2 "a" 3 }}', "1 2a3"),
        ('{{ eq .env "prod" }}', "true"),
        ('{{ eq .env "dev" "prod" }}', "true"),
        ('{{ ne .env "prod" }}', "false"),
        ("{{ lt .zero .count }}", "true"),
        ("{{ ge .zero .count }}", "false"),
        ('{{ and .flag (eq .env "prod") }}', "true"),
        ("{{ or .empty .name }}", "Api"),
        ("{{ not .flag }}", "false"),
        ("{{ .steps.build.passed }}", "true"),
        ("{{ .nothing }}", ""),
        ("{{ .labels }}", '{"tier":"web","owner":"ops"}'),
        ("{{ .steps.build.items }}", "7"),
        ("{{ `raw\\n` }}", "raw\\n"),
        ('{{ "tab\\there" }}', "tab\there"),
        ("{{ 0x10 }} {{ -1 }} {{ 1_000 }}", "16 -1 1000"),
        ("{{ $.name }}", "Api"),
        ("{{ $v := .name }}{{ $v }}-{{ $v }}", "Api-Api"),
        ("{{/* a Go comment */}}kept", "kept"),
        ("a\n  {{- .name -}}  \nb", "aApib"),
        ("{{ .matrix.python }}", "3.12"),
        ("{{ .name | title }}", "Api"),  # a Jinja filter as a later pipeline stage
        ('{{ .missing | default("n/a") }}', "n/a"),  # Go path, Jinja filter call
        ('{{ .name ~ "-" ~ .env }}', "Api-prod"),  # Go paths in a Jinja expression
        ("{{ .count + 1 }}", "4"),
    ],
)
def test_go_forms_render(engine: TemplateEngine, template: str, rendered: str) -> None:
    assert render(engine, template) == rendered


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ('{{ if eq .env "prod" }}P{{ else }}O{{ end }}', "P"),
        ('{{ if eq .env "dev" }}D{{ else if eq .env "prod" }}P{{ else }}O{{ end }}', "P"),
        ("{{ if .empty }}yes{{ else }}no{{ end }}", "no"),
        ("{{ if not .flag }}x{{ end }}done", "done"),
        ("{{ if and .flag (gt .count 2) }}big{{ end }}", "big"),
        ("{{ if steps.test.exit_code == 0 }}ok{{ end }}", "ok"),  # a Jinja condition
        ("{{ range .tags }}[{{ . }}]{{ end }}", "[a][b]"),
        ("{{ range $i, $t := .tags }}{{ $i }}={{ $t }};{{ end }}", "0=a;1=b;"),
        ("{{ range $t := .tags }}{{ $t }}{{ $.name }}{{ end }}", "aApibApi"),
        ("{{ range .labels }}{{ . }},{{ end }}", "ops,web,"),  # map values by sorted key
        ("{{ range $k, $v := .labels }}{{ $k }}={{ $v }} {{ end }}", "owner=ops tier=web "),
        ("{{ range .empty }}x{{ else }}none{{ end }}", "none"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ('{{ range .tags }}{{ if eq . "b" }}{{ break }}{{ end }}{{ . }}{{ end }}', "a"),
        ("{{ range .tags }}{{ range $.tags }}{{ . }}{{ end }}|{{ end }}", "ab|ab|"),
        ("{{ with .steps.build }}{{ .image_id }}{{ end }}", "sha256:abc"),
        ("{{ with .empty }}x{{ else }}{{ .name }}{{ end }}", "Api"),
        ("{{ with $b := .steps.build }}{{ $b.items }}{{ end }}", "7"),
        ("{{- if .flag -}}\n  yes\n{{- end }}", "yes"),
        ("{% if flag %}{{ if .flag }}both{{ end }}{% endif %}", "both"),
    ],
)
def test_go_control_forms_render(engine: TemplateEngine, template: str, rendered: str) -> None:
    assert render(engine, template) == rendered


def test_uuidv4_and_now_look_like_what_the_seed_documents(engine: TemplateEngine) -> None:
    # Given the seed's two functions that take no argument
    # When they are rendered, in the Go form and as Jinja calls
    uuids = render(engine, "{{ uuidv4 }} {{ uuidv4() }}").split()
    stamps = render(engine, "{{ now }} {{ now() }}").split()
    # Then they are fresh v4 UUIDs and RFC 3339 UTC times
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", u)
        for u in uuids
    )
    assert uuids[0] != uuids[1]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s) for s in stamps)


def test_run_parameters_do_not_shadow_the_go_functions(engine: TemplateEngine) -> None:
    # Given run parameters named like functions
    # When the Go forms call those functions
    text = render(engine, '{{ index .steps "build" "image_id" }} {{ .index }}', index="p")
    # Then the functions still work, and the parameters are still fields
    assert text == "sha256:abc p"


# --- plain Jinja ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{{ steps.build.image_id }}", "sha256:abc"),
        ("{{ params.x | upper }}", "HELLO"),
        ("{{ steps['deploy-prod'].url }}", "https://example.test"),
        ("{% if flag %}on{% else %}off{% endif %}", "on"),
        ("{% for t in tags %}{{ t }}{% endfor %}", "ab"),
        ("{{ name ~ '-' ~ env }}", "Api-prod"),
        ("{{ missing | default('n/a') }}", "n/a"),
        ("{% if missing is defined %}x{% else %}undefined{% endif %}", "undefined"),
        ("{{ not flag }}", "false"),
        ("{{ flag and name }}", "Api"),
        ("{{ 'x' if flag else 'y' }}", "x"),
        ("{{ tags | join(',') }}", "a,b"),
        ("{{ labels | json }}", '{"tier":"web","owner":"ops"}'),
        ("{{ json(labels) }}", '{"tier":"web","owner":"ops"}'),
        ("{{ count * 2 }}", "6"),
        ("{% raw %}{{ .name }}{% endraw %}", "{{ .name }}"),
        ("{# {{ .name }} #}x", "x"),
        ("script\n", "script\n"),
        ("{{ name }}\n", "Api\n"),  # the trailing newline of a script survives
    ],
)
def test_plain_jinja_works_unchanged(engine: TemplateEngine, template: str, rendered: str) -> None:
    assert render(engine, template) == rendered


@pytest.mark.parametrize(
    ("source", "translated"),
    [
        ("{{ .steps.build.image_id }}", "{{ steps.build.image_id }}"),
        ('{{ index .steps "a-b" "x" }}', '{{ _go_index(steps, "a-b", "x") }}'),
        ('{{ .x | default "n/a" }}', '{{ _go_default("n/a", x) }}'),
        ("{{ if .a }}1{{ else }}2{{ end }}", "{% if a %}1{% else %}2{% endif %}"),
        ("{{- .a -}}", "{{- a -}}"),
        ("{{ .in }}", '{{ _go_root["in"] }}'),
        ("{{ steps.build.image_id }}", "{{ steps.build.image_id }}"),
        ("{{ params.x | upper }}", "{{ params.x | upper }}"),
        ("{% if x %}{{ a ~ b }}{% endif %}", "{% if x %}{{ a ~ b }}{% endif %}"),
        ("{{ not x }}", "{{ not x }}"),
        ("no templates here", "no templates here"),
    ],
)
def test_translate_rewrites_only_go_forms(source: str, translated: str) -> None:
    assert translate(source) == translated


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{{ x }}", True), ("{% if x %}{% endif %}", True), ("echo ${HOME} {x}", False), ("", False)],
)
def test_has_template(text: str, expected: bool) -> None:
    assert has_template(text) is expected


def test_text_without_templates_is_returned_as_it_is(engine: TemplateEngine) -> None:
    # Given text Jinja could not even parse, but holding no {{ or {%
    text = "echo }} {# $((1 + 2)) %}"
    # When it is rendered, then it comes back untouched
    assert engine.render(text, {}) is text


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ .steps.biuld.image_id }}",
            "'steps' has no key 'biuld' (it has: build, deploy-prod, test)",
        ),
        (
            "{{ .steps.build.imageid }}",
            "'steps.build' has no key 'imageid' (it has: image_id, items, passed)",
        ),
        ("{{ .versoin }}", "'versoin' is undefined"),
        ('{{ index .steps "nope" "url" }}', "'steps' has no key 'nope'"),
        ("{{ index .tags 5 }}", "'tags' has no item 5 (it has 2 items)"),
        ("{{ .steps.deploy-prod.url }}", 'use index, e.g. {{ index .steps "step-name" "field" }}'),
        ("{{ lowr .name }}", "function 'lowr' is not defined"),
        ("{{ if .flag }}x", "{{ if }} has no {{ end }}"),
        ("x{{ end }}", "{{ end }} without {{ if }}, {{ range }} or {{ with }}"),
        ('{{ template "x" }}', "{{ template }} is not supported"),
        ("{{ .name }", "{{ is never closed with }}"),
        ("{% if x %}", "Unexpected end of template"),
        ("{{ lower .name .env }}", "takes 1 positional argument but 2 were given"),
        ("{{ 1 / zero }}", "division by zero"),
        ('{{ lt 1 "a" }}', "'<' not supported between instances of 'int' and 'str'"),
        ("{% for t in missing %}{% endfor %}", "'missing' is undefined"),
        ("{{ not .missing }}", "'missing' is undefined"),
    ],
)
def test_errors_are_one_readable_line(engine: TemplateEngine, template: str, message: str) -> None:
    error = fails(engine, template)
    assert message in error
    assert "\n" not in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("echo one\necho {{ .name }\n", "line 2: "),
        ("echo one\necho two\n{{ if .flag }}\nx\n", "line 3: {{ if }} has no {{ end }}"),
        ("a\nb\n{{ end }}", "line 3: "),
    ],
)
def test_errors_in_multi_line_text_name_the_line(
    engine: TemplateEngine, template: str, message: str
) -> None:
    assert fails(engine, template).startswith(message)


def test_check_compiles_without_rendering(engine: TemplateEngine) -> None:
    # Given templates that need values the check does not have
    engine.check('{{ .steps.later.output }} {{ if eq .env "prod" }}x{{ end }}')
    engine.check("plain text")
    # When a template is malformed, then check says so
    with pytest.raises(TemplateError, match="has no"):
        engine.check("{{ range .tags }}")


# --- the sandbox and its limits ------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ steps.__class__ }}",
        "{{ {}.items.__self__ }}",
        "{{ namespace.__init__ }}",
        "{{ tags.append('x') }}",
        "{{ labels.update({'a': 1}) }}",
    ],
)
def test_the_sandbox_blocks_escapes(engine: TemplateEngine, template: str) -> None:
    message = fails(engine, template)
    assert message.startswith("not allowed: ") or "unsafe" in message


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 'a' * 10**9 }}", "longer than the limit of 1048576 characters"),
        ("{{ 9 ** (9 ** 9) }}", "more than 16384 bits"),
        ("{{ 2 ** 100000 }}", "more than 16384 bits"),
        ("{{ [1] * 10**9 }}", "longer than the limit"),
        ("{{ big ~ big }}", "longer than the limit"),
        ("{{ big + big }}", "longer than the limit"),
        ('{{ big | replace("x", "yy") }}', "longer than the limit"),
        ('{{ big.replace("x", "yy") }}', "longer than the limit"),
        ('{{ replace "x" "yy" .big }}', "longer than the limit"),
        ('{{ "{0}{0}".format(big) }}', "longer than the limit"),
        ('{{ "%999999999s" | format(1) }}', "longer than the limit"),
        ('{{ "%999999999s" % 1 }}', "longer than the limit"),
        ('{{ printf "%999999999s" 1 }}', "not supported"),
        ("{{ 'ab'.center(10**9) }}", "a number above 1048576 is not allowed here"),
        ("{{ 'a' | indent(10**9) }}", "a number above 1048576 is not allowed here"),
        ("{{ [1] | batch(10**9, 0) | list }}", "a number above 1048576"),
        ('{{ range(100000) | join("x" * 1000) }}', "longer than the limit"),
        ("{{ ('\t' * 100000).expandtabs(100) }}", "longer than the limit"),
        (
            '{% set ns = namespace(s="ab") %}{% for i in range(40) %}'
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "longer than the limit",
        ),
        ("{% for i in range(10**6) %}{% endfor %}", "Range too big"),
        ("{{ range 1000000 }}{{ end }}", "Range too big"),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "rendered text is longer"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses too deeply"),
        ("{{ lipsum(10**9) }}", "'lipsum' is undefined"),
    ],
)
def test_resource_bombs_are_refused(engine: TemplateEngine, template: str, message: str) -> None:
    assert message in fails(engine, template, big="x" * 600_000)


def test_the_output_limit_is_the_engines(engine: TemplateEngine) -> None:
    # Given an engine with a small output limit
    small = TemplateEngine(max_output=50)
    # When a template would make more, then it is refused; shorter output is fine
    with pytest.raises(TemplateError, match="limit of 50"):
        small.render("{% for i in range(10) %}{{ name }}-{{ env }}{% endfor %}", CONTEXT)
    with pytest.raises(TemplateError, match="limit of 50"):
        small.render("{{ 'a' * 51 }}", CONTEXT)
    assert small.render("{{ 'a' * 50 }}", CONTEXT) == "a" * 50


# --- shell text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "text", "values"),
    [
        ("echo {{ .name }}", 'echo "$CONVEYOR_VALUE_1"', {"CONVEYOR_VALUE_1": "Api"}),
        ("echo {{ .evil }}", 'echo "$CONVEYOR_VALUE_1"', {"CONVEYOR_VALUE_1": "$(rm -rf /)"}),
        ('echo "v={{ .name }}!"', 'echo "v=${CONVEYOR_VALUE_1}!"', {"CONVEYOR_VALUE_1": "Api"}),
        ("echo 'v={{ .name }}'", "echo 'v='\"$CONVEYOR_VALUE_1\"''", {"CONVEYOR_VALUE_1": "Api"}),
        (
            "echo {{ .name }}-{{ .env }}",
            'echo "$CONVEYOR_VALUE_1"-"$CONVEYOR_VALUE_2"',
            {"CONVEYOR_VALUE_1": "Api", "CONVEYOR_VALUE_2": "prod"},
        ),
        (
            "# don't\necho {{ .name }}",
            '# don\'t\necho "$CONVEYOR_VALUE_1"',
            {"CONVEYOR_VALUE_1": "Api"},
        ),
        (
            "cat <<EOF\nit's {{ .name }}\nEOF\necho {{ .env }}",
            'cat <<EOF\nit\'s ${CONVEYOR_VALUE_1}\nEOF\necho "$CONVEYOR_VALUE_2"',
            {"CONVEYOR_VALUE_1": "Api", "CONVEYOR_VALUE_2": "prod"},
        ),
        (
            "{% if flag %}make {{ .name }}{% endif %}",
            'make "$CONVEYOR_VALUE_1"',
            {"CONVEYOR_VALUE_1": "Api"},
        ),
        (
            "echo {{ .flag }} {{ .tags }}",
            'echo "$CONVEYOR_VALUE_1" "$CONVEYOR_VALUE_2"',
            {"CONVEYOR_VALUE_1": "true", "CONVEYOR_VALUE_2": '["a","b"]'},
        ),
        ("echo plain", "echo plain", {}),
    ],
)
def test_shell_text_gets_values_as_variables(
    engine: TemplateEngine, template: str, text: str, values: dict[str, str]
) -> None:
    # Given shell text with templates
    found: dict[str, str] = {}
    # When it is rendered for a shell
    rendered = engine.render_shell(template, {**CONTEXT, "evil": "$(rm -rf /)"}, found)
    # Then no value is in the text; each is a quoted variable reference
    assert (rendered, found) == (text, values)


@pytest.mark.parametrize(
    "template",
    [
        "printf '%s\\n' {{ .value }}",
        "printf '%s\\n' \"{{ .value }}\"",
        "printf '%s\\n' '{{ .value }}'",
        "printf '%s\\n' \"[{{ .value }}]\" | tr -d '[]'",
        "cat <<EOF\n{{ .value }}\nEOF",
    ],
)
@pytest.mark.parametrize("value", ["$(echo pwned)", "a  b * 'q' \"d\" `x` \\ ;|&", "it's"])
def test_a_shell_prints_hostile_values_verbatim(
    engine: TemplateEngine, template: str, value: str
) -> None:
    # Given a value full of shell syntax, placed in every kind of quoting
    values: dict[str, str] = {}
    script = engine.render_shell(template, {"value": value}, values)
    # When a real shell runs the text with the values in its environment
    result = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ.get("PATH", os.defpath), **values},
        capture_output=True,
        text=True,
        check=True,
    )
    # Then it prints the value exactly, never running any of it
    assert result.stdout == value + "\n"


def test_shell_values_continue_the_numbering_of_the_dict(engine: TemplateEngine) -> None:
    # Given values already set aside for an earlier field
    values = {"CONVEYOR_VALUE_1": "earlier"}
    # When another field is rendered into the same dict
    text = engine.render_shell("run {{ .name }}", CONTEXT, values)
    # Then it takes the next name and leaves the earlier one alone
    assert text == 'run "$CONVEYOR_VALUE_2"'
    assert values == {"CONVEYOR_VALUE_1": "earlier", "CONVEYOR_VALUE_2": "Api"}


def test_a_failed_shell_render_sets_no_values(engine: TemplateEngine) -> None:
    values: dict[str, str] = {}
    with pytest.raises(TemplateError, match="'missing' is undefined"):
        engine.render_shell("echo {{ .name }} {{ .missing }}", CONTEXT, values)
    assert values == {}


def test_a_quoted_here_document_cannot_take_values(engine: TemplateEngine) -> None:
    # A quoted delimiter turns expansion off, so no variable could carry the value
    with pytest.raises(TemplateError, match="quoted delimiter"):
        engine.render_shell("cat <<'EOF'\n{{ .name }}\nEOF", CONTEXT, {})


# --- conditions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('eq .env "prod"', True),
        ('ne .env "prod"', False),
        (".steps.build.passed", True),
        ("not .steps.build.passed", False),
        (".empty", False),
        ("steps.test.exit_code == 0", True),
        ("steps.test.exit_code != 0", False),
        ("env == 'prod' and count > 2", True),
        (".count > 2", True),
        ("tags", True),
        ("{{ .steps.build.passed }}", True),
        ("{{ .steps.test.passed }}", False),  # the string "false"
        ("{{ .zero }}", False),
        ("{{ .nothing }}", False),
        ("{{ 'No' }}", False),
        ("{{ ' NULL ' }}", False),
        ("{{ '<no value>' }}", False),
        ("{{ .name }}", True),
        ('{{ if eq .env "prod" }}yes{{ end }}', True),
        ('{{ if eq .env "dev" }}yes{{ end }}', False),
        ("{% if flag %}1{% else %}0{% endif %}", True),
    ],
)
def test_evaluate_decides_conditions(
    engine: TemplateEngine, condition: str, expected: bool
) -> None:
    assert engine.evaluate(condition, CONTEXT) is expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (".steps.tset.passed", "'steps' has no key 'tset'"),
        ("steps.test.exit_code ==", "unexpected 'end of template'"),
        ("''.__class__", "not allowed: "),
        ("{{ .missing }}", "'missing' is undefined"),
    ],
)
def test_evaluate_errors_are_template_errors(
    engine: TemplateEngine, condition: str, message: str
) -> None:
    with pytest.raises(TemplateError) as error:
        engine.evaluate(condition, CONTEXT)
    assert message in error.value.message


# --- values --------------------------------------------------------------------------


def test_render_value_walks_dicts_and_lists(engine: TemplateEngine) -> None:
    # Given a step config with templates at several depths, and values that are not text
    config = {
        "image": "myapp:{{ .Version }}",
        "tags": ["{{ .env }}", "latest", 3],
        "health": {"path": "/{{ .name | lower }}", "enabled": True},
        "timeout": None,
    }
    # When it is rendered, then every string is rendered and nothing else changes
    assert engine.render_value(config, CONTEXT) == {
        "image": "myapp:1.4.2",
        "tags": ["prod", "latest", 3],
        "health": {"path": "/api", "enabled": True},
        "timeout": None,
    }


def test_render_value_in_shell_mode_sets_values_aside(engine: TemplateEngine) -> None:
    values: dict[str, str] = {}
    commands = engine.render_value(
        ["echo {{ .name }}", "echo {{ .env }}"], CONTEXT, shell=True, values=values
    )
    assert commands == ['echo "$CONVEYOR_VALUE_1"', 'echo "$CONVEYOR_VALUE_2"']
    assert values == {"CONVEYOR_VALUE_1": "Api", "CONVEYOR_VALUE_2": "prod"}
    with pytest.raises(ValueError, match="needs a values dict"):
        engine.render_value("echo {{ .name }}", CONTEXT, shell=True)


def test_a_cached_template_sees_each_new_context(engine: TemplateEngine) -> None:
    # Given one template rendered many times, as the runtime does
    texts = [engine.render("v={{ .version }}", {"version": str(n)}) for n in range(3)]
    # Then each render uses its own context
    assert texts == ["v=0", "v=1", "v=2"]
