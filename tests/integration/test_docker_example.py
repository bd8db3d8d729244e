"""examples/docker.yaml as a user runs it: ``conveyor run ... --source examples/webservice``
builds the web service's image, runs its tests in a container, keeps the JUnit report
as an artifact and pushes the image to a real registry.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.clirun import Cli
from tests.integration.registry_kit import PYTHON, Registry, docker_client, registry

pytestmark = pytest.mark.timeout(600)
RUN_TIMEOUT = 480.0  # seconds: the first push uploads the whole Python base image


@pytest.fixture(scope="module")
def engine_client() -> Any:
    """A client of the engine, with the Python base image built."""
    return docker_client(PYTHON)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    with registry(tmp_path / "registry") as found:
        yield found


@pytest.fixture
def tag(engine_client: Any) -> Iterator[str]:
    """A fresh tag for the example's image; every image so tagged goes afterwards."""
    value = f"t{uuid.uuid4().hex[:10]}"
    yield value
    for image in engine_client.api.images():
        for name in image.get("RepoTags") or []:
            if name.endswith(f"webservice:{value}"):
                engine_client.images.remove(name, force=True)


def test_the_example_builds_tests_stores_the_report_and_pushes(
    tmp_path: Path, reg: Registry, tag: str
) -> None:
    # Given the example as it is in the repository
    cli = Cli(tmp_path / "user")
    # When a user runs it as the README says, against a registry of their own
    result = cli(
        "run",
        "examples/docker.yaml",
        "--source",
        "examples/webservice",
        "--param",
        f"registry={reg.host}",
        "--param",
        f"tag={tag}",
        timeout=RUN_TIMEOUT,
    )
    # Then it succeeds, the image is in the registry under the tag
    assert result.code == 0, result.output
    assert reg.tags("webservice") == [tag]
    with cli.store() as store:
        outputs = {s.key: s.outputs for s in store.list_steps(result.run_id)}
    assert outputs["push"]["image"] == f"{reg.host}/webservice:{tag}"
    assert outputs["push"]["digest"] == reg.digest("webservice", tag)
    assert "Ran 3 tests" in outputs["test"]["stdout"]
    # And the test report is an artifact of the run
    report = tmp_path / "junit.xml"
    got = cli("artifacts", "get", result.run_id, "reports/junit.xml", "-o", str(report))
    assert got.code == 0, got.output
    assert '<testsuite name="webservice" tests="3" failures="0" errors="0"' in report.read_text()


def test_failing_tests_keep_their_report_and_push_nothing(
    tmp_path: Path, reg: Registry, tag: str
) -> None:
    # Given the example's service with a test that now fails
    cli = Cli(tmp_path / "user")
    source = cli.workdir / "broken"
    shutil.copytree(cli.workdir / "examples" / "webservice", source)
    tests = source / "test_app.py"
    tests.write_text(
        tests.read_text().replace('(200, {"status": "ok"})', '(200, {"status": "down"})')
    )
    # When it runs
    result = cli(
        "run",
        "examples/docker.yaml",
        "--source",
        "broken",
        "--param",
        f"registry={reg.host}",
        "--param",
        f"tag={tag}",
        timeout=RUN_TIMEOUT,
    )
    # Then the run fails at the tests, nothing is pushed, and the report says why
    assert result.code == 1, result.output
    assert "exited with 1" in result.stderr
    assert reg.tags("webservice") == []
    report = tmp_path / "junit.xml"
    got = cli("artifacts", "get", result.run_id, "reports/junit.xml", "-o", str(report))
    assert got.code == 0, got.output
    text = report.read_text()
    assert 'failures="1"' in text
    assert "test_health_says_ok" in text
