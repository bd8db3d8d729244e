"""A hostile pipeline cannot print a secret through Conveyor's own template functions,
filters or common encodings; secrets too short to mask are refused.

The runs are real (the embedded engine, SQLite, the local sandbox); what is checked is
what a user could read afterwards: every log line, every output, every error and
event, and the database file itself.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.parse
from collections.abc import Iterator

import pytest

from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.engine.variables import Masker
from conveyor.orchestrator.errors import SecretRefused
from conveyor.orchestrator.settings import Settings
from tests.unit.engine_kit import log_text, open_engine, pipeline, run, step

SECRET = "s3cr3t-Value/42+ok?"
RAW = SECRET.encode()

#: Templates a hostile pipeline could use, and the text each would print unmasked.
DERIVED = {
    "jinja_upper": ("{{ secrets.TOKEN | upper }}", SECRET.upper()),
    "go_upper": ("{{ .secrets.TOKEN | upper }}", SECRET.upper()),
    "go_lower_call": ("{{ lower .secrets.TOKEN }}", SECRET.lower()),
    "go_replace": ('{{ replace "-" "_" .secrets.TOKEN }}', SECRET.replace("-", "_")),
    "jinja_replace": ("{{ secrets.TOKEN | replace('s', 'z') }}", SECRET.replace("s", "z")),
    "go_b64enc": ("{{ b64enc .secrets.TOKEN }}", base64.b64encode(RAW).decode()),
    "go_printf_q": ('{{ printf "%q" .secrets.TOKEN }}', json.dumps(SECRET)),
    "jinja_reverse": ("{{ secrets.TOKEN | reverse }}", SECRET[::-1]),
    "jinja_slice": ("{{ secrets.TOKEN[2:] }}", SECRET[2:]),
    "jinja_join": ("{{ secrets.TOKEN | list | join('.') }}", ".".join(SECRET)),
    "jinja_urlencode": ("{{ secrets.TOKEN | urlencode }}", urllib.parse.quote(SECRET, safe="/")),
    "jinja_method": ("{{ secrets.TOKEN.swapcase() }}", SECRET.swapcase()),
    "jinja_hex": ("{{ secrets.TOKEN.encode().hex() }}", RAW.hex()),
    "jinja_title_format": ("{{ 'x%sx' | format(secrets.TOKEN) | title }}", f"x{SECRET}x".title()),
    "jinja_char_loop": (
        "{% for c in secrets.TOKEN %}{{ c }} {% endfor %}",
        " ".join(SECRET) + " ",
    ),
    "jinja_rebuilt": (
        '{% set ns = namespace(s="") %}{% for c in secrets.TOKEN %}'
        "{% set ns.s = ns.s ~ (c | upper) %}{% endfor %}{{ ns.s }}",
        SECRET.upper(),
    ),
    "jinja_concat_upper": ("{{ (secrets.TOKEN ~ '!') | upper }}", SECRET.upper() + "!"),
}

#: What a shell prints of the secret in encodings (no template function involved).
ENCODED = {
    "base64": base64.b64encode(RAW).decode(),
    "base64url": base64.urlsafe_b64encode(RAW).decode().rstrip("="),
    "basic_auth": base64.b64encode(b"user:" + RAW).decode(),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
}


@pytest.fixture
def engine(settings: Settings) -> Iterator[EmbeddedEngine]:
    with open_engine(settings) as found:
        yield found


def _database(settings: Settings) -> str:
    conn = sqlite3.connect(settings.data_dir / "conveyor.db")
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _everything(engine: EmbeddedEngine, run_id: str) -> str:
    """All a user can read of a run: logs, outputs, errors, events."""
    parts = log_text(engine, run_id)
    for s in engine.store.list_steps(run_id):
        parts += [json.dumps(s.outputs), s.last_error or ""]
    parts += [json.dumps(e.payload) for e in engine.store.list_events(run_id)]
    return "\n".join(parts)


def test_template_functions_and_filters_do_not_print_a_secret(
    engine: EmbeddedEngine, settings: Settings
) -> None:
    # Given a step per way of deriving a printable value from a secret
    steps = "\n".join(
        f"- {{name: {name}, type: step.log, needs: [], config: {{message: {json.dumps(text)}}}}}"
        for name, (text, _) in DERIVED.items()
    )

    # When the run prints them all
    result = run(engine, pipeline(steps), secrets={"TOKEN": SECRET})

    # Then each step ran, and no derived value shows anywhere: logs, outputs, events...
    assert result.status.value == "succeeded"
    seen = _everything(engine, result.id)
    for name, (_, derived) in DERIVED.items():
        assert derived not in seen, f"{name} printed {derived!r}"
        assert "***" in log_text(engine, result.id, name), name
    # ...nor in the database
    engine.close()
    database = _database(settings)
    for name, (_, derived) in DERIVED.items():
        assert derived not in database, f"{name} stored {derived!r}"


def test_encodings_of_a_secret_printed_by_a_command_are_masked(engine: EmbeddedEngine) -> None:
    # Given a command printing the secret base64-, URL-safe-, Basic- and hex-encoded
    text = pipeline("""
        - name: leak
          type: step.shell_exec
          config:
            commands:
              - t={{ .secrets.TOKEN }}; printf %s "$t" | base64
              - t={{ .secrets.TOKEN }}; printf %s "$t" | base64 | tr '+/' '-_' | tr -d '='
              - t={{ .secrets.TOKEN }}; printf 'user:%s' "$t" | base64
              - t={{ .secrets.TOKEN }}; echo "hex $(printf %s "$t" | od -An -tx1 | tr -d ' \\n')"
              - t={{ .secrets.TOKEN }}; printf %s "$t" | od -An -tx1 | tr -d ' \\n' | tr a-f A-F; echo
    """)

    # When it runs
    result = run(engine, text, secrets={"TOKEN": SECRET})

    # Then the step ran, and its log shows none of the encodings
    assert result.status.value == "succeeded"
    lines = log_text(engine, result.id, "leak")
    seen = "\n".join(lines)
    for name, encoded in ENCODED.items():
        assert encoded not in seen, f"{name} printed: {lines}"
    assert sum("***" in line for line in lines) >= len(ENCODED)


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        *ENCODED.values(),
        base64.b64encode(b"ab:" + RAW + b":cd").decode(),
    ],
)
def test_the_mask_knows_the_common_encodings(form: str) -> None:
    # Given a log line with the secret in one of its encodings, Then it is masked
    line = f"before {form} after"
    assert form not in Masker({"TOKEN": SECRET})(line)


def test_a_failing_template_does_not_quote_a_derived_secret(engine: EmbeddedEngine) -> None:
    # Given a condition and a config whose errors would quote the upper-cased secret
    text = pipeline("""
        - {name: cond, type: step.log, needs: [], on_error: continue, if: "{{ steps[secrets.TOKEN | upper] }}", config: {message: x}}
        - {name: conf, type: step.log, needs: [], on_error: continue, config: {message: "{{ steps[.secrets.TOKEN | upper] }}"}}
    """)

    # When it runs
    result = run(engine, text, secrets={"TOKEN": SECRET})

    # Then both steps fail, and neither error shows the derived value
    for key in ("cond", "conf"):
        failed = step(engine, result.id, key)
        assert failed.status.value == "failed"
        assert "has no key '***'" in (failed.last_error or ""), failed.last_error
    assert SECRET.upper() not in _everything(engine, result.id)


@pytest.mark.parametrize("value", ["", "x", "ab", "  ab  "])
def test_a_secret_too_short_to_mask_is_refused_before_anything_is_stored(
    engine: EmbeddedEngine, value: str
) -> None:
    # Given a run with a secret shorter than three characters
    compiled = engine.compile(pipeline("- {name: a, type: step.log, config: {message: hi}}"))

    # When it is started, Then it is refused, naming the secret but not its value
    with pytest.raises(SecretRefused) as refused:
        engine.start(compiled.select(None), compiled.source, {}, secrets={"PIN": value})
    assert "'PIN'" in refused.value.message
    assert "3 characters" in refused.value.message
    # ...and no run was stored
    assert engine.store.list_runs() == []
