"""A scan in the Docker runner: Bandit in an image built here from the base Python image.

No image can be pulled here, so the fixture builds ``conveyor-test/bandit:scan`` from
``conveyor-test/python:3.11`` with this environment's Bandit copied in (no network,
a few seconds). The step runs it exactly as it would run Bandit's official image.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.findings import FindingQuery, list_findings
from tests.conftest import missing
from tests.unit.engine_kit import finish, log_text, open_engine, start, step

BASE = "conveyor-test/python:3.11"
IMAGE = "conveyor-test/bandit:scan"
DISTRIBUTIONS = ("bandit", "stevedore", "rich", "PyYAML", "markdown-it-py", "Pygments", "mdurl")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def bandit_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image with Bandit on PATH, built from the local base image."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get(BASE)
        importlib.metadata.distribution("bandit")
    except Exception as exc:
        missing("Docker engine, base image and bandit", f"{exc} (scripts/base-images)")
    context = tmp_path_factory.mktemp("bandit-image")
    _copy_distributions(context / "site")
    wrapper = context / "bandit"
    wrapper.write_text('#!/bin/sh\nexec python3 -m bandit "$@"\n')
    wrapper.chmod(0o755)
    (context / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY site /opt/bandit\nCOPY bandit /usr/local/bin/bandit\n"
        "ENV PYTHONPATH=/opt/bandit\n"
    )
    client.images.build(path=str(context), tag=IMAGE, network_mode="none", rm=True)
    yield IMAGE


def _copy_distributions(site: Path) -> None:
    for name in DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for entry in dist.files or []:
            source = Path(str(dist.locate_file(entry)))
            if str(entry).startswith("..") or not source.is_file():
                continue  # console scripts live outside site-packages
            target = site / str(entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


PIPELINE = """\
pipelines:
  sec:
    steps:
      - name: checkout
        type: step.shell_exec
        config:
          commands:
            - mkdir -p src && printf 'import subprocess\\n\\nsubprocess.call(cmd, shell=True)\\n' > src/app.py
      - name: sast
        type: step.scan_sast
        config: {scanner: bandit, image: "%s", source_path: /workspace/src,
                 fail_on_severity: critical}
"""


def test_bandit_runs_in_its_image_in_the_docker_sandbox(
    bandit_image: str, settings: Settings
) -> None:
    """Given Bandit's image, When the step runs it in the Docker sandbox, Then real findings."""
    with open_engine(settings) as engine:
        run = finish(engine, start(engine, PIPELINE % bandit_image), timeout=120)
        assert run.status.value == "succeeded", log_text(engine, run.id)
        outputs: dict[str, Any] = step(engine, run.id, "sast").outputs
        rows = list_findings(engine.store, run.id, FindingQuery())

    assert outputs["image"] == bandit_image
    assert outputs["command"].startswith("bandit -r src -f json -o .conveyor/scans/sast-1.json")
    assert outputs["summary"]["high"] == 1 and outputs["summary"]["low"] == 1
    assert {(r["rule_id"], r["severity"], r["location"], r["line"]) for r in rows} == {
        ("B404", "low", "src/app.py", 1),
        ("B602", "high", "src/app.py", 3),
    }


FAKE_GRYPE = r"""
#include <stdio.h>
#include <string.h>
/* Stands in for grype in a shell-less image: writes /report.json (a real grype report)
   to the path after --file, as `grype dir:SRC -o json --file REPORT` would. */
int main(int argc, char **argv) {
    const char *out = NULL;
    for (int i = 1; i + 1 < argc; i++) if (strcmp(argv[i], "--file") == 0) out = argv[i + 1];
    if (!out) { fputs("no --file given\n", stderr); return 2; }
    FILE *in = fopen("/report.json", "rb"), *dst = fopen(out, "wb");
    if (!in || !dst) { perror("open"); return 3; }
    char buf[65536]; size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, dst);
    fclose(dst);
    printf("scanned %s\n", argv[1]);
    return 0;
}
"""

GRYPE_PIPELINE = """\
pipelines:
  deps:
    steps:
      - name: deps
        type: step.scan_deps
        config: {scanner: grype, image: "%s", fail_on: never}
"""


@pytest.fixture(scope="module")
def shellless_grype(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A FROM-scratch image holding only a static /grype and a report: no shell at all."""
    import subprocess

    import docker

    context = tmp_path_factory.mktemp("grype-image")
    (context / "fake.c").write_text(FAKE_GRYPE)
    built = subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(context / "grype"), str(context / "fake.c")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        missing("a C compiler with static libc", built.stderr[-300:])
    fixture = Path(__file__).parents[1] / "data" / "scanners" / "grype-directory.json"
    shutil.copy(fixture, context / "report.json")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY grype /grype\nCOPY report.json /report.json\n"
    )
    client = docker.from_env()
    image, _ = client.images.build(
        path=str(context), tag="conveyor-test/grype-shellless:1", network_mode="none", rm=True
    )
    yield "conveyor-test/grype-shellless:1"
    client.images.remove(image.id, force=True)


def test_a_shell_less_scanner_image_runs_as_the_containers_command(
    shellless_grype: str, settings: Settings
) -> None:
    """Given a scanner image with no shell (as grype's official image is)
    When scan_deps runs grype in it
    Then grype runs as the container's own command and its report is read back."""
    with open_engine(settings) as engine:
        run = finish(engine, start(engine, GRYPE_PIPELINE % shellless_grype), timeout=120)
        assert run.status.value == "succeeded", log_text(engine, run.id)
        outputs: dict[str, Any] = step(engine, run.id, "deps").outputs
        log = log_text(engine, run.id)

    assert "scanned dir:." in log  # its own stdout, streamed to the step log
    assert outputs["command"].startswith("/grype dir:")
    assert outputs["scan_result"]["findings_total"] > 0 and outputs["summary"]["critical"] > 0
