"""Findings' pure core: the severity table, CVSS scores, fingerprints, SARIF, suppressions."""

from __future__ import annotations

import json
from datetime import date

import pytest

from conveyor.orchestrator.errors import SuppressionError
from conveyor.orchestrator.scanning import sarif, sarif_read, suppressions
from conveyor.orchestrator.scanning.cvss import base_score
from conveyor.orchestrator.scanning.results import Finding, build_result, with_snippets
from conveyor.orchestrator.scanning.severity import Severity, from_score, from_word, parse_threshold

S = Severity


@pytest.mark.parametrize(
    ("word", "severity"),
    [
        ("CRITICAL", S.CRITICAL),
        ("Critical", S.CRITICAL),
        ("ERROR", S.HIGH),
        ("HIGH", S.HIGH),
        ("error", S.HIGH),
        ("WARNING", S.MEDIUM),
        ("MODERATE", S.MEDIUM),
        ("Medium", S.MEDIUM),
        ("note", S.LOW),
        ("LOW", S.LOW),
        ("INFO", S.INFO),
        ("Negligible", S.INFO),
        ("none", S.INFO),
        ("INVENTORY", S.INFO),
        ("UNKNOWN", S.UNKNOWN),
        ("UNDEFINED", S.UNKNOWN),
        ("", S.UNKNOWN),
        ("bogus", S.UNKNOWN),
        (None, S.UNKNOWN),
    ],
)
def test_every_vocabulary_maps_through_the_one_table(word: object, severity: Severity) -> None:
    """Given a scanner's severity word, When mapped, Then it lands where the table says."""
    assert from_word(word) is severity


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        ("9.8", S.CRITICAL),
        (9.0, S.CRITICAL),
        ("8.9", S.HIGH),
        (7.0, S.HIGH),
        ("5.3", S.MEDIUM),
        (4.0, S.MEDIUM),
        ("3.9", S.LOW),
        (0.1, S.LOW),
        ("0.0", S.INFO),
        ("", S.UNKNOWN),
        ("11", S.UNKNOWN),
        ("nan", S.UNKNOWN),
        (None, S.UNKNOWN),
    ],
)
def test_cvss_scores_map_to_the_qualitative_ratings(score: object, severity: Severity) -> None:
    """Given a CVSS score, When mapped, Then it follows CVSS v3's qualitative scale."""
    assert from_score(score) is severity


def test_thresholds_take_the_seed_words_and_refuse_others() -> None:
    """Given the seed's threshold words, Then they parse; unknown words are refused."""
    assert [parse_threshold(w) for w in ("error", "warning", "info", "HIGH", "critical")] == [
        S.HIGH,
        S.MEDIUM,
        S.INFO,
        S.HIGH,
        S.CRITICAL,
    ]
    for bad in ("unknown", "severe", "", 3):
        with pytest.raises(ValueError, match="is not a severity"):
            parse_threshold(bad)


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:L", 5.6),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        ("CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:C/C:H/I:H/A:H", 8.5),  # grype-image.json says so
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
    ],
)
def test_cvss_v3_base_scores_match_the_nvd(vector: str, score: float) -> None:
    """Given CVSS v3 vectors with known NVD scores, When scored, Then the scores match."""
    assert base_score(vector) == score


def test_other_vectors_have_no_score() -> None:
    """Given v2, v4 or broken vectors, Then there is no score (the caller falls back)."""
    for vector in ("AV:N/AC:L/Au:N/C:P/I:P/A:P", "CVSS:4.0/AV:N/AC:L", "CVSS:3.1/AV:X", "1"):
        assert base_score(vector) is None


def sast(line: int, code: str | None, rule: str = "eval", path: str = "app.py") -> Finding:
    """A SAST finding at ``line`` whose flagged code is ``code``."""
    return Finding(
        scanner="semgrep", rule_id=rule, severity=S.HIGH, location=path, line=line, snippet=code
    )


def test_fingerprints_survive_code_moving_down_the_file() -> None:
    """Given the same finding on another line, When fingerprinted, Then the print is the same."""
    before = build_result("semgrep", [sast(10, "    return eval(x)")]).findings[0]
    after = build_result("semgrep", [sast(42, "return   eval(x)")]).findings[0]
    assert before.fingerprint == after.fingerprint
    other = build_result("semgrep", [sast(10, "return eval(y)")]).findings[0]
    assert other.fingerprint != before.fingerprint


def test_identical_lines_in_one_file_get_distinct_stable_prints() -> None:
    """Given the same code twice in a file, Then two prints, the same after both move."""
    first = build_result("semgrep", [sast(3, "eval(x)"), sast(9, "eval(x)")]).findings
    moved = build_result("semgrep", [sast(13, "eval(x)"), sast(29, "eval(x)")]).findings
    assert len({f.fingerprint for f in first}) == 2
    assert [f.fingerprint for f in first] == [f.fingerprint for f in moved]


def test_hidden_snippets_are_read_from_the_workspace() -> None:
    """Given 'requires login' for the code, When the line is read, Then it fingerprints as code."""
    hidden = build_result("semgrep", [sast(5, "requires login")])
    lines = {("app.py", 5): "    return eval(x)"}
    filled = with_snippets(hidden, lambda path, line: lines.get((path, line)))
    known = build_result("semgrep", [sast(77, "return eval(x)")]).findings[0]
    assert filled.findings[0].fingerprint == known.fingerprint
    unread = with_snippets(hidden, lambda path, line: None).findings[0]
    assert unread.fingerprint != known.fingerprint  # the line number stands in


def test_sarif_rendering_is_a_2_1_0_log_that_reads_back() -> None:
    """Given a result, When rendered as SARIF, Then the log has the 2.1.0 shape and reads back."""
    findings = [
        sast(3, "eval(x)").model_copy(update={"new": True}),
        sast(7, "yaml.load(t)", rule="yaml").model_copy(
            update={"severity": S.MEDIUM, "suppressed": "constant input"}
        ),
        Finding(scanner="semgrep", rule_id="odd", severity=S.UNKNOWN, location="b.py"),
    ]
    result = build_result("semgrep", findings, version="1.0")
    log = json.loads(json.dumps(sarif.render(result)))
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "semgrep"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["eval", "yaml", "odd"]
    first = run["results"][0]
    assert first["level"] == "error" and first["baselineState"] == "new"
    assert first["locations"][0]["physicalLocation"]["region"]["startLine"] == 3
    assert first["partialFingerprints"]["conveyor/v1"] == result.findings[0].fingerprint
    assert run["results"][1]["suppressions"][0]["justification"] == "constant input"
    (back,) = sarif_read.parse(log)
    assert [(f.rule_id, f.severity, f.location, f.line) for f in back.findings] == [
        (f.rule_id, f.severity if f.severity is not S.UNKNOWN else S.MEDIUM, f.location, f.line)
        for f in result.findings
    ]
    assert back.summary.suppressed == 1


SUPPRESSIONS = """\
suppressions:
  - rule: B602
    path: scripts/*.py
    reason: build scripts run only on our machines
    expires: 2027-01-15
  - fingerprint: {print}
    reason: the input is a constant
    expires: 2026-01-01
"""


def test_suppressions_waive_until_their_expiry_date() -> None:
    """Given a rule waiver and an expired fingerprint waiver, Then only the live one waives."""
    script = Finding(scanner="bandit", rule_id="B602", severity=S.HIGH, location="scripts/x.py")
    app = build_result("bandit", [sast(1, "eval(x)")]).findings[0]
    waivers = suppressions.parse(SUPPRESSIONS.format(print=app.fingerprint))
    applied = suppressions.apply([script, app], waivers, date(2026, 6, 1))
    assert [f.suppressed for f in applied.findings] == [
        "build scripts run only on our machines",
        None,
    ]
    assert [(w.describe(), n) for w, n in applied.expired] == [
        (f"fingerprint {app.fingerprint}", 1)
    ]
    on_expiry_day = suppressions.apply([script], waivers, date(2027, 1, 15))
    assert on_expiry_day.findings[0].suppressed
    after = suppressions.apply([script], waivers, date(2027, 1, 16))
    assert after.findings[0].suppressed is None
    assert after.expired[0][0].describe() == "rule B602 under scripts/*.py"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("suppressions:\n  - rule: B1\n    expires: 2027-01-01\n", "reason"),
        ("suppressions:\n  - rule: B1\n    reason: x\n", "expires"),
        ("suppressions:\n  - reason: x\n    expires: 2027-01-01\n", "fingerprint or a rule"),
        ("suppressions:\n  - rule: B1\n    reason: x\n    expires: soon\n", "expires"),
        ("suppressions: [\n", "not YAML"),
        ("suppressions:\n  - rule: B1\n    reason: x\n    expires: 2027-01-01\n    by: me\n", "by"),
    ],
)
def test_invalid_suppression_files_say_what_is_wrong(text: str, message: str) -> None:
    """Given a broken suppressions file, When parsed, Then the error names the problem."""
    with pytest.raises(SuppressionError, match=message):
        suppressions.parse(text)
