"""``source: url`` pulls: the step through the ``http`` provider's in-memory twin
(``MemoryWeb``), and the provider (``providers/http``) against a web server on this host."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.orchestrator.contracts import UrlSource
from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.plugins import Providers
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing import MemoryWeb
from conveyor.providers.http import HttpFetch, check_url
from conveyor.steps.artifact_pull import ArtifactPull, ArtifactPullConfig
from tests.unit.fakes import FakeContext


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves its directory (redirects and rebinding: tests/security/test_url_pull.py)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read answers, not the server's log."""


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tool.sh").write_text("echo tool\n")
    handler = lambda *a: _Handler(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("http://metadata.internal/latest", ["169.254.169.254"]),
        ("http://intranet.example/x", ["10.1.2.3"]),
        ("http://mixed.example/x", ["93.184.216.34", "192.168.1.9"]),
        ("http://v6.example/x", ["::1"]),
        ("file:///etc/passwd", []),
        ("ftp://example.com/x", []),
    ],
)
def test_urls_and_redirect_targets_inside_the_network_are_refused(
    url: str, addresses: list[str]
) -> None:
    with pytest.raises(StepFailed):
        check_url(url, allow_private=False, resolver=lambda host: addresses)


def test_a_public_address_passes_the_check() -> None:
    check_url("https://example.com/x", allow_private=False, resolver=lambda host: ["93.184.216.34"])


def test_the_http_provider_is_installed_for_steps(settings: Settings) -> None:
    """Given the installed package, ``ctx.provider("http")`` finds a UrlSource."""
    found = Providers(settings).get("http")

    assert isinstance(found, UrlSource) and isinstance(found, HttpFetch)


def test_the_provider_downloads_where_the_operator_allows_private_addresses(
    settings: Settings, web: str, tmp_path: Path
) -> None:
    fetch = HttpFetch(settings.model_copy(update={"allow_private_urls": True}))

    size = fetch.fetch(f"{web}/tool.sh", tmp_path / "tool.sh", limit=100)

    assert size == 10 and (tmp_path / "tool.sh").read_text() == "echo tool\n"


def test_the_provider_applies_the_operators_policy(
    settings: Settings, web: str, tmp_path: Path
) -> None:
    with pytest.raises(StepFailed, match="loopback, private or link-local"):
        HttpFetch(settings).fetch(f"{web}/tool.sh", tmp_path / "tool.sh", limit=100)


@pytest.mark.parametrize(
    ("path", "limit", "problem"),
    [
        ("/tool.sh", 3, r"/tool.sh is larger than the 3-byte download limit$"),
        ("/missing", 100, r"/missing: HTTP 404 File not found$"),
    ],
)
def test_the_provider_fails_in_one_line(
    settings: Settings, web: str, tmp_path: Path, path: str, limit: int, problem: str
) -> None:
    fetch = HttpFetch(settings.model_copy(update={"allow_private_urls": True}))

    with pytest.raises(StepFailed, match=problem):
        fetch.fetch(web + path, tmp_path / "file", limit=limit)


def test_the_twin_is_a_url_source() -> None:
    web: UrlSource = MemoryWeb()
    assert isinstance(web, UrlSource)


@dataclass
class UrlContext(FakeContext):
    """A context whose ``http`` provider is the twin, with the operator's size cap."""

    web: MemoryWeb = field(default_factory=MemoryWeb)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, max_download_bytes=555)

    def provider(self, name: str) -> Any:
        assert name == "http"
        return self.web


def test_the_step_fetches_through_the_http_provider(tmp_path: Path) -> None:
    """Given a page, the step writes it at dest, with the operator's cap, and masks the URL."""
    url = "https://example.com/tool?token=s3cret"
    ctx = UrlContext(tmp_path, secrets={"TOKEN": "s3cret"}, web=MemoryWeb({url: b"#!/bin/sh\n"}))
    config = ArtifactPullConfig(source="url", url=url, dest="t/tool")

    outputs = ArtifactPull().run(ctx, config)

    assert (ctx.workspace / "t" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert ctx.web.asked == [(url, 555)]
    assert outputs == {
        "source": "url",
        "key": None,
        "dest": "t/tool",
        "size": 10,
        "bytes_written": 10,
    }
    assert ctx.log.lines == ["downloaded https://example.com/tool?token=*** to t/tool (10 bytes)"]


def test_the_step_fails_in_the_providers_words(tmp_path: Path) -> None:
    ctx = UrlContext(tmp_path)
    config = ArtifactPullConfig(source="url", url="https://example.com/nope", dest="x")

    with pytest.raises(StepFailed, match=r"^https://example.com/nope: HTTP 404 Not Found$"):
        ArtifactPull().run(ctx, config)
