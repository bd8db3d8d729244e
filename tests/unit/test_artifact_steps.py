"""Artifacts through pipelines: artifacts_out, step.artifact_push and step.artifact_pull."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.orchestrator.engine.embedded import EmbeddedEngine
from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.plugins import load_artifact_store
from conveyor.steps.artifact_files import unpack
from tests.unit.engine_kit import log_text, open_engine, pipeline, run, statuses, step

BUILD = pipeline("""
    - name: build
      type: step.shell_exec
      config:
        commands:
          - mkdir -p dist/assets && echo app > dist/app.js && echo css > dist/assets/site.css
          - echo "binary v1" > server
        artifacts_out:
          - {key: ui-dist, path: /workspace/dist}
          - {key: server-binary, path: server}
    - name: report
      type: step.artifact_push
      config: {source_path: dist/app.js, key: reports/app.js}
""")


def test_files_and_directories_are_kept_as_artifacts_of_the_run(engine: EmbeddedEngine) -> None:
    result = run(engine, BUILD)

    assert result.status == "succeeded", result.error
    stored = load_artifact_store(engine.settings).list(result.id)
    assert [(a.key, a.kind) for a in stored] == [
        ("reports/app.js", "file"),
        ("server-binary", "file"),
        ("ui-dist", "dir"),
    ]
    outputs = step(engine, result.id, "build").outputs
    assert [a["key"] for a in outputs["artifacts"]] == ["ui-dist", "server-binary"]
    assert step(engine, result.id, "report").outputs["size"] == 4


def test_the_next_run_pulls_what_the_last_successful_one_stored(engine: EmbeddedEngine) -> None:
    first = run(engine, BUILD.replace("pipelines:\n  p:", "pipelines:\n  app:"))
    pull = pipeline("""
        - {name: ui, type: step.artifact_pull, config: {source: previous_execution, key: ui-dist, dest: restored}}
        - {name: bin, type: step.artifact_pull, config: {source: previous_execution, key: server-binary, dest: bin/server}}
        - {name: check, type: step.shell_exec, config: {commands: ["cat restored/app.js restored/assets/site.css bin/server"]}}
    """).replace("pipelines:\n  p:", "pipelines:\n  app:")

    second = run(engine, pull)

    assert second.status == "succeeded", second.error
    assert step(engine, second.id, "ui").outputs["execution_id"] == first.id
    assert log_text(engine, second.id, "check")[-3:] == ["app", "css", "binary v1"]


def test_pulling_with_no_earlier_successful_run_says_so(engine: EmbeddedEngine) -> None:
    text = pipeline(
        "- {name: get, type: step.artifact_pull, config: {source: previous_execution, key: x, dest: x}}"
    )
    result = run(engine, text)

    assert result.status == "failed"
    assert "no earlier successful run of p to pull x from" in (result.error or "")


def test_a_missing_source_path_fails_the_step_clearly(engine: EmbeddedEngine) -> None:
    text = pipeline(
        "- {name: push, type: step.artifact_push, config: {source_path: nope.txt, key: k}}"
    )
    result = run(engine, text)

    assert result.status == "failed"
    assert "cannot store nope.txt as k" in (result.error or "")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "tool.sh").write_text("echo tool\n")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_pulls_refuse_addresses_inside_the_network(engine: EmbeddedEngine, web: str) -> None:
    text = pipeline(
        f"- {{name: get, type: step.artifact_pull, config: {{source: url, url: '{web}/tool.sh', dest: tool.sh}}}}"
    )
    result = run(engine, text)

    assert result.status == "failed"
    assert "loopback, private or link-local" in (result.error or "")


def test_url_pulls_work_where_the_operator_allows_private_addresses(settings, web: str) -> None:  # type: ignore[no-untyped-def]
    text = pipeline(f"""
        - {{name: get, type: step.artifact_pull, config: {{source: url, url: '{web}/tool.sh', dest: tools/tool.sh}}}}
        - {{name: use, type: step.shell_exec, config: {{commands: ["sh tools/tool.sh"]}}}}
    """)
    with open_engine(settings.model_copy(update={"allow_private_urls": True})) as engine:
        result = run(engine, text)
        assert result.status == "succeeded", result.error
        assert statuses(engine, result.id) == {"get": "succeeded", "use": "succeeded"}
        assert log_text(engine, result.id, "use")[-1] == "tool"


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs.txt", "link"])
def test_unpacking_refuses_what_would_escape(tmp_path: Path, evil: str) -> None:
    import tarfile

    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        if evil == "link":
            info = tarfile.TarInfo("link")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:  # written by hand: tar.add would strip a leading /
            info = tarfile.TarInfo(evil)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))

    with pytest.raises(StepFailed, match="cannot unpack"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_unpacking_stops_at_the_size_cap(tmp_path: Path) -> None:
    import tarfile

    archive = tmp_path / "big.tar"
    (tmp_path / "blob").write_bytes(b"0" * 5000)
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "blob", arcname="blob")

    with pytest.raises(StepFailed, match="the limit is 1000"):
        unpack(archive, tmp_path / "out", limit=1000)
