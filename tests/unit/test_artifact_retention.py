"""Artifact retention: finished runs lose their artifacts once their pipeline's retention is up.

Times are explicit: each sweep is told what "now" is, days after the runs really ended.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.api.errors import status_for
from conveyor.orchestrator.artifacts.retention import ArtifactRetention, expiry, explain_missing
from conveyor.orchestrator.clock import utcnow
from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.engine.recovery import Reconciler, retry_run
from conveyor.orchestrator.errors import ArtifactExpired, ArtifactNotFound, SpecError
from conveyor.orchestrator.pipeline.spec import parse
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.providers.local import LocalArtifactStore
from tests.unit.runtime_kit import (
    FAIL,
    A,
    Harness,
    pipeline,
    sqlite_harness,  # noqa: F401  (the fixture h, on SQLite: retention reads SQL)
)

DAY = timedelta(days=1)
KEEP_1D = "    artifacts: {retention: 1d}\n"


@pytest.fixture
def artifacts(settings: Settings) -> ArtifactStore:
    return LocalArtifactStore(settings)


def retention(
    store: SqlStore, artifacts: ArtifactStore, default: float | None = None
) -> ArtifactRetention:
    return ArtifactRetention(store, lambda: artifacts, default)


def finished_run(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path, extra: str = "", fail: bool = False
) -> str:
    """A run that stored two artifacts and ended (succeeded, or failed)."""
    run_id = h.start(pipeline(A, extra=extra))
    h.drive(run_id, {"a": [FAIL]} if fail else {})
    source = tmp_path / "f"
    source.write_bytes(b"data")
    for key in ("app.tar", "reports/junit.xml"):
        artifacts.put(run_id, key, source)
    return run_id


def expired_events(store: SqlStore, run_id: str) -> list[dict[str, object]]:
    return [e.payload for e in store.list_events(run_id) if e.type == "artifacts.expired"]


def test_artifacts_go_once_the_pipelines_retention_is_up(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given a run of a pipeline keeping artifacts one day,
    when the sweep runs before and after that day,
    then they are kept before, deleted after, and the run says so."""
    run_id = finished_run(h, artifacts, tmp_path, KEEP_1D)
    sweeper = retention(h.store, artifacts)

    assert sweeper.sweep(utcnow() + DAY - timedelta(minutes=5)) == 0
    assert len(artifacts.list(run_id)) == 2

    assert sweeper.sweep(utcnow() + DAY + timedelta(minutes=5)) == 1
    assert artifacts.list(run_id) == []
    assert expired_events(h.store, run_id) == [{"count": 2, "retention": "1d", "seconds": 86400.0}]


def test_a_second_sweep_does_nothing(h: Harness, artifacts: ArtifactStore, tmp_path: Path) -> None:
    """Given a run whose artifacts were swept, when the sweep runs again, nothing happens."""
    run_id = finished_run(h, artifacts, tmp_path, KEEP_1D)
    sweeper = retention(h.store, artifacts)
    later = utcnow() + 3 * DAY
    sweeper.sweep(later)

    assert sweeper.sweep(later) == 0
    assert retention(h.store, artifacts).sweep(later + DAY) == 0  # another process, too
    assert len(expired_events(h.store, run_id)) == 1


def test_runs_still_going_are_never_touched(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given a run still going that already stored artifacts, even a zero retention leaves them."""
    run_id = h.start(pipeline(A, extra="    artifacts: {retention: 0s}\n"))
    source = tmp_path / "f"
    source.write_bytes(b"x")
    artifacts.put(run_id, "early", source)

    assert retention(h.store, artifacts, default=0).sweep(utcnow() + 30 * DAY) == 0
    assert [a.key for a in artifacts.list(run_id)] == ["early"]


def test_the_operators_default_applies_where_the_pipeline_says_nothing(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given runs of pipelines with no retention, a 7d one and `forever`,
    when the operator's default is 2d and 10 days have passed,
    then all but the `forever` run lose their artifacts, failed runs included."""
    plain = finished_run(h, artifacts, tmp_path, fail=True)
    week = finished_run(h, artifacts, tmp_path, "    artifacts: {retention: 7d}\n")
    kept = finished_run(h, artifacts, tmp_path, "    artifacts: {retention: forever}\n")
    sweeper = retention(h.store, artifacts, default=2 * 86400.0)

    assert sweeper.sweep(utcnow() + 3 * DAY) == 1
    assert (artifacts.list(plain), len(artifacts.list(week))) == ([], 2)

    assert sweeper.sweep(utcnow() + 10 * DAY) == 1
    assert artifacts.list(week) == []
    assert len(artifacts.list(kept)) == 2
    assert expired_events(h.store, plain)[0]["retention"] == "2d"


def test_without_any_retention_artifacts_are_kept_forever(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given no default and no pipeline retention, a year later nothing is deleted,
    and the artifact store is never even opened."""
    run_id = finished_run(h, artifacts, tmp_path)

    def no_store() -> ArtifactStore:
        raise AssertionError("the sweep opened the artifact store")

    assert ArtifactRetention(h.store, no_store, None).sweep(utcnow() + 365 * DAY) == 0
    assert len(artifacts.list(run_id)) == 2


def test_a_run_retried_after_expiry_counts_from_its_new_end(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given a failed run whose artifacts expired, retried and finished again with new ones,
    then they are kept for a full retention from the retry's end."""
    run_id = finished_run(h, artifacts, tmp_path, KEEP_1D, fail=True)
    retention(h.store, artifacts).sweep(utcnow() + 2 * DAY)
    retry_run(h.runtime, run_id)
    h.drive(run_id, {})
    source = tmp_path / "g"
    source.write_bytes(b"again")
    artifacts.put(run_id, "fresh", source)

    assert expiry(h.store, run_id) is None
    assert retention(h.store, artifacts).sweep(utcnow() + DAY - timedelta(minutes=5)) == 0
    assert retention(h.store, artifacts).sweep(utcnow() + DAY + timedelta(minutes=5)) == 1
    assert artifacts.list(run_id) == []
    assert len(expired_events(h.store, run_id)) == 2


def test_the_reconciler_sweeps_every_few_minutes_not_every_pass(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given a reconciler with retention, when it passes twice a minute apart and again later,
    then only the first and last passes sweep."""
    first = finished_run(h, artifacts, tmp_path, KEEP_1D)
    reconciler = Reconciler(h.runtime, retention=retention(h.store, artifacts))
    now = utcnow() + 2 * DAY

    report = reconciler.run_once(now)
    second = finished_run(h, artifacts, tmp_path, "    artifacts: {retention: 1h}\n")
    assert report.expired_artifacts == 1 and bool(report)
    assert reconciler.run_once(now + timedelta(minutes=1)).expired_artifacts == 0
    assert reconciler.run_once(now + timedelta(minutes=6)).expired_artifacts == 1
    assert artifacts.list(first) == artifacts.list(second) == []


def test_an_expired_artifact_is_explained_as_expired(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given a run whose artifacts expired, a lookup that found nothing says they expired."""
    run_id = finished_run(h, artifacts, tmp_path, KEEP_1D)
    other = finished_run(h, artifacts, tmp_path)
    retention(h.store, artifacts).sweep(utcnow() + 2 * DAY)

    with pytest.raises(
        ArtifactExpired, match=r"artifact app.tar of run .* expired: deleted .*1d after"
    ):
        explain_missing(h.store, run_id, "app.tar")
    assert issubclass(ArtifactExpired, ArtifactNotFound) and status_for(ArtifactExpired) == 404
    explain_missing(h.store, other, "nope")  # not expired: the caller's 404 stands
    found = expiry(h.store, run_id)
    assert found is not None and (found.count, found.retention) == (2, 86400.0)


def test_a_failing_store_is_tried_again_next_sweep(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given an artifact store that fails once, the run is not marked and the next sweep deletes."""
    run_id = finished_run(h, artifacts, tmp_path, KEEP_1D)
    calls: list[str] = []

    class Flaky:
        def delete_run(self, rid: str) -> int:
            calls.append(rid)
            if len(calls) == 1:
                from conveyor.orchestrator.errors import ArtifactError

                raise ArtifactError("S3 request failed: connection refused")
            return artifacts.delete_run(rid)

    sweeper = ArtifactRetention(h.store, Flaky, None)  # type: ignore[arg-type,return-value]
    later = utcnow() + 2 * DAY

    assert sweeper.sweep(later) == 0
    assert expired_events(h.store, run_id) == []
    assert sweeper.sweep(later) == 1
    assert artifacts.list(run_id) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "artifacts: {retention: soon}",
            "pipelines.p.artifacts.retention: 'soon' is not a duration",
        ),
        ("artifacts: {keep: 3}", "pipelines.p.artifacts.keep: unknown key"),
        ("artifacts: {retention: -1d}", "pipelines.p.artifacts.retention"),
    ],
)
def test_a_wrong_retention_is_a_spec_error_with_its_path(text: str, problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        parse(f"pipelines:\n  p:\n    {text}\n    steps: [{{name: a, type: t}}]\n")


@pytest.mark.parametrize(
    ("value", "seconds"), [("30d", 30 * 86400.0), ("12h", 43200.0), ("", None), ("forever", None)]
)
def test_the_operator_sets_the_default_retention(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float | None
) -> None:
    monkeypatch.setenv("CONVEYOR_ARTIFACT_RETENTION", value)
    assert Settings().artifact_retention == seconds


def test_conveyor_run_sweeps_at_start_and_the_cli_says_expired(settings: Settings) -> None:
    """Given an embedded run that stored an artifact and an operator retention of zero,
    when the next `conveyor run` starts,
    then the old run's artifacts are deleted, and `conveyor artifacts` says they expired."""
    from click.testing import CliRunner

    from conveyor.cli.main import cli
    from tests.unit.engine_kit import open_engine, run

    text = engine_pipeline(
        "- {name: build, type: step.shell_exec, config: {commands: ['echo v1 > bin'], "
        "artifacts_out: [{key: bin, path: bin}]}}"
    )
    zero = settings.model_copy(update={"artifact_retention": 0.0})
    with open_engine(zero) as engine:
        first = run(engine, text)
        assert first.status == "succeeded", first.error
        assert [a.key for a in engine.executor.artifacts().list(first.id)] == ["bin"]
    with open_engine(zero) as engine:
        second = run(engine, text)
        assert engine.executor.artifacts().list(first.id) == []
        assert [a.key for a in engine.executor.artifacts().list(second.id)] == ["bin"]

    cli_args = ["--data-dir", str(settings.data_dir), "artifacts"]
    got = CliRunner().invoke(cli, [*cli_args, "get", first.id, "bin", "-o", "x"])
    listed = CliRunner().invoke(cli, [*cli_args, first.id])
    assert isinstance(got.exception, ArtifactExpired)  # `main` prints it as one line
    assert f"artifact bin of run {first.id} expired" in got.exception.message
    assert listed.exit_code == 0 and "expired: 1 deleted" in listed.output


def engine_pipeline(steps: str) -> str:
    from tests.unit.engine_kit import pipeline as one_pipeline

    return one_pipeline(steps)


def test_a_backlog_drains_a_batch_per_pass(
    h: Harness, artifacts: ArtifactStore, tmp_path: Path
) -> None:
    """Given three expired runs and a batch of two, the first pass deletes two
    and the very next pass, a minute later, the third."""
    runs = [finished_run(h, artifacts, tmp_path, KEEP_1D) for _ in range(3)]
    sweeper = ArtifactRetention(h.store, lambda: artifacts, None, batch=2)
    reconciler = Reconciler(h.runtime, retention=sweeper)
    now = utcnow() + 2 * DAY

    assert reconciler.run_once(now).expired_artifacts == 2
    assert reconciler.run_once(now + timedelta(minutes=1)).expired_artifacts == 1
    assert [artifacts.list(r) for r in runs] == [[], [], []]


def test_pulling_an_expired_artifact_fails_saying_it_expired(settings: Settings) -> None:
    """Given a run whose artifacts went with a retention of zero,
    when a later run pulls one of them,
    then its step fails saying when and why they went, not just that none is there."""
    from tests.unit.engine_kit import open_engine, run

    build = engine_pipeline(
        "- {name: build, type: step.shell_exec, config: {commands: ['echo v1 > bin'], "
        "artifacts_out: [{key: bin, path: bin}]}}"
    )
    zero = settings.model_copy(update={"artifact_retention": 0.0})
    with open_engine(zero) as engine:
        first = run(engine, build)
        assert first.status == "succeeded", first.error
    with open_engine(zero) as engine:  # it sweeps as it starts
        pull = engine_pipeline(
            "- {name: fetch, type: step.artifact_pull, config: {source: previous_execution, "
            f"execution_id: '{first.id}', key: bin, dest: old/bin}}}}"
        )
        later = run(engine, pull)
    assert later.status == "failed"
    assert f"artifact bin of run {first.id} expired: deleted" in (later.error or "")
