"""Provider ``http``: URL downloads that cannot become a way into the network.

Steps reach it as ``ctx.provider("http")`` (``step.artifact_pull`` with ``source: url``)
and see it as the orchestrator's ``UrlSource``. Only http and https URLs are fetched.
Unless the operator allows it (``CONVEYOR_ALLOW_PRIVATE_URLS``), a URL whose host
resolves to a loopback, private, link-local, reserved or cloud-metadata address is
refused, and so is any redirect to one: every hop is checked, so a public URL cannot
bounce the request inward.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.settings import Settings

Resolver = Callable[[str], list[str]]
MAX_REDIRECTS = 5
TIMEOUT = 30.0


class HttpFetch:
    """The ``UrlSource`` over urllib, under the operator's network policy."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self._resolver = resolver or resolve

    def fetch(self, url: str, dest: Path, *, limit: int) -> int:
        """Stream ``url`` to ``dest``, at most ``limit`` bytes; returns the bytes written."""
        return download(
            url,
            dest,
            allow_private=self.settings.allow_private_urls,
            limit=limit,
            resolver=self._resolver,
        )


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to."""
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
    except socket.gaierror as exc:
        raise StepFailed(f"cannot resolve {host}: {exc.strerror}") from None


def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """Refuse URLs that are not http(s) or that point inside the network."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StepFailed(f"{url}: only http and https URLs can be pulled")
    if allow_private:
        return
    for address in resolver(parts.hostname):
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise StepFailed(
                f"{url}: {parts.hostname} is {address}, a loopback, private or link-local "
                "address; pulls from inside the network need allow_private_urls"
            )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that passes the same check."""

    def __init__(self, allow_private: bool, resolver: Resolver) -> None:
        self.allow_private, self.resolver = allow_private, resolver

    def redirect_request(
        self, req: Any, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        check_url(newurl, allow_private=self.allow_private, resolver=self.resolver)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(
    url: str, dest: Path, *, allow_private: bool, limit: int, resolver: Resolver = resolve
) -> int:
    """Stream ``url`` to ``dest``; returns the bytes written."""
    check_url(url, allow_private=allow_private, resolver=resolver)
    opener = urllib.request.build_opener(_CheckedRedirects(allow_private, resolver))
    opener.addheaders = [("User-Agent", "conveyor-artifact-pull")]
    written = 0
    try:
        with opener.open(url, timeout=TIMEOUT) as answer, open(dest, "wb") as out:
            while piece := answer.read(1024 * 1024):
                written += len(piece)
                if written > limit:
                    raise StepFailed(f"{url} is larger than the {limit}-byte download limit")
                out.write(piece)
    except urllib.error.HTTPError as exc:
        raise StepFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StepFailed(f"{url}: {reason}") from None
    return written
