"""Provider ``http``: URL downloads that cannot become a way into the network.

Steps reach it as ``ctx.provider("http")`` (``step.artifact_pull`` with ``source: url``)
and see it as the orchestrator's ``UrlSource``. Only http and https URLs are fetched.
Unless the operator allows it (``CONVEYOR_ALLOW_PRIVATE_URLS``), a URL whose host is or
resolves to a loopback, private, link-local, reserved, multicast or cloud-metadata
address is refused, and so is any redirect to one.

The check and the connection cannot disagree: each hop resolves its host once, checks
every address it got, and connects to one of exactly those addresses (the name still
goes in the ``Host`` header and, for https, in the TLS server name the certificate is
verified against). A name that answers a public address to the check and a private one
a moment later (DNS rebinding) therefore never reaches the private one. Numeric hosts
are read the way resolvers read them (``2130706433``, ``0x7f.1``, ``017700000001`` are all
127.0.0.1) and IPv6 addresses that carry an IPv4 one (IPv4-mapped and -compatible,
NAT64, 6to4, Teredo) are judged by what they reach. Proxies from the environment are
not used: the address checked must be the address connected to.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.settings import Settings

Resolver = Callable[[str], list[str]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
TIMEOUT = 30.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 1024 * 1024
AGENT = "conveyor-artifact-pull"

#: Not reachable from the internet, or not meant to be: refused whatever Python's
#: ``ipaddress`` (whose idea of "global" changed between releases) says.
_INTERNAL_V4 = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_INTERNAL_V6 = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT: ::ffff:0:a.b.c.d


class HttpFetch:
    """The ``UrlSource`` over http.client, under the operator's network policy."""

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
    """Every address ``host`` resolves to, in the resolver's order of preference."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StepFailed(f"cannot resolve {host}: {exc.strerror}") from None
    except UnicodeError:
        raise StepFailed(f"cannot resolve {host}: not a valid host name") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """One hop, checked: where to connect (``addresses``) and what to ask for."""

    url: str
    scheme: str
    host: str  # for the Host header and the TLS server name
    port: int
    path: str
    addresses: tuple[str, ...]


def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """Resolve ``url``'s host once and check every address; what may be connected to.

    Refuses URLs that are not http(s), and (unless ``allow_private``) any whose host is
    or resolves to an address inside the network.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StepFailed(f"{url}: only http and https URLs can be pulled")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise StepFailed(f"{url}: the port is not a number from 0 to 65535") from None
    host = _ascii_host(url, parts.hostname)
    literal = ip_literal(host, url)
    addresses = [str(literal)] if literal is not None else resolver(host)
    if not addresses:
        raise StepFailed(f"cannot resolve {host}: no addresses")
    for address in addresses:
        ip = _address(address, url)
        why = None if allow_private else internal(ip)
        if why is not None:
            raise StepFailed(
                f"{url}: {parts.hostname} is {address}, a loopback, private or link-local "
                f"address ({why}); pulls from inside the network need allow_private_urls"
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, parts.scheme, host, port, path, tuple(addresses))


def internal(ip: Address) -> str | None:
    """Why ``ip`` is inside the network (loopback, private, ...), or None if it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried, how = _carried_v4(ip)
        if carried is not None:
            why = internal(carried)
            return None if why is None else f"{how} {carried}: {why}"
        if ip in _COMPATIBLE and int(ip) > 1:
            return f"IPv4-compatible {low32(ip)}, deprecated"
    table: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]
    table = _INTERNAL_V6 if isinstance(ip, ipaddress.IPv6Address) else _INTERNAL_V4
    found = next((why for net, why in table if ip in net), None)
    if found is None and (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_private
        or ip.is_reserved
        or not ip.is_global
    ):
        found = "not a public address"
    return found


def _carried_v4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    """The IPv4 address an IPv6 one stands for, and in what way (or None)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _TRANSLATED:
        return low32(ip), "IPv4-translated"
    if ip in _NAT64:
        return low32(ip), "NAT64 for"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4 for"
    return None, ""


def low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    """The IPv4 address in the last 32 bits of ``ip``."""
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def ip_literal(host: str, url: str = "") -> Address | None:
    """``host`` as the address a resolver would read it as, or None for a name.

    IPv4 hosts may be written in one to four parts, each decimal, octal (``0177``) or
    hex (``0x7f``), as ``inet_aton`` accepts; a host whose last label is a number and
    that is no such address is refused rather than handed to a resolver.
    """
    if ":" in host:
        return _address(host, url or host)
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()  # one trailing dot, as in a fully qualified name
    if not _is_number(labels[-1]):
        return None
    numbers = [_number(label) for label in labels]
    bad = f"{url or host}: {host} is neither a host name nor a valid IPv4 address"
    if len(numbers) > 4 or any(n is None for n in numbers):
        raise StepFailed(bad)
    parts = [n for n in numbers if n is not None]
    last_bits = 8 * (5 - len(parts))  # the last part fills what the others leave
    if any(n > 255 for n in parts[:-1]) or parts[-1] >= 1 << last_bits:
        raise StepFailed(bad)
    value = 0
    for n in parts[:-1]:
        value = value << 8 | n
    return ipaddress.IPv4Address(value << last_bits | parts[-1])


def _is_number(label: str) -> bool:
    lower = label.lower()
    if lower.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lower[2:])
    return label != "" and all(c in "0123456789" for c in label)


def _number(label: str) -> int | None:
    lower = label.lower()
    try:
        if lower.startswith("0x"):
            return int(lower[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label[1:], 8)
        return int(label, 10)
    except ValueError:
        return None


def _address(text: str, url: str) -> Address:
    try:
        return ipaddress.ip_address(text.split("%", maxsplit=1)[0])
    except ValueError:
        raise StepFailed(f"{url}: {text} is not a valid IP address") from None


def _ascii_host(url: str, host: str) -> str:
    """The host as resolvers and TLS see it: internationalised names in their ASCII form."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise StepFailed(f"{url}: {host} is not a valid host name") from None


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to one of the checked addresses, whatever the name says now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.addresses = target.addresses

    def connect(self) -> None:
        problem: OSError | None = None
        for address in self.addresses:
            try:
                self.sock = socket.create_connection(
                    (address.split("%", maxsplit=1)[0], self.port), self.timeout
                )
                return
            except OSError as exc:
                problem = exc
        assert problem is not None
        raise problem


class _PinnedHTTPS(_PinnedHTTP):
    """The same, under TLS: the certificate is verified for the name, not the address."""

    default_port = 443

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target, timeout)
        self.context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)


def _open(target: Target) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPS(target, TIMEOUT, ssl.create_default_context())
    else:
        connection = _PinnedHTTP(target, TIMEOUT)
    try:
        connection.request(
            "GET",
            target.path,
            headers={"User-Agent": AGENT, "Accept-Encoding": "identity", "Connection": "close"},
        )
        return connection, connection.getresponse()
    except BaseException:
        connection.close()
        raise


def download(
    url: str, dest: Path, *, allow_private: bool, limit: int, resolver: Resolver = resolve
) -> int:
    """Stream ``url`` to ``dest``, following at most MAX_REDIRECTS redirects, each checked.

    Returns the bytes written.
    """
    current = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            target = check_url(current, allow_private=allow_private, resolver=resolver)
            connection, answer = _open(target)
            try:
                location = answer.getheader("Location")
                if answer.status in REDIRECTS and location:
                    current = urllib.parse.urljoin(current, location.strip())
                    continue
                if not 200 <= answer.status < 300:
                    raise StepFailed(f"{url}: HTTP {answer.status} {answer.reason}")
                return _save(url, answer, dest, limit)
            finally:
                connection.close()
    except (http.client.HTTPException, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StepFailed(f"{url}: {reason}") from None
    raise StepFailed(f"{url}: more than {MAX_REDIRECTS} redirects")


def _save(url: str, answer: http.client.HTTPResponse, dest: Path, limit: int) -> int:
    length = answer.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise StepFailed(f"{url} is larger than the {limit}-byte download limit")
    written = 0
    with open(dest, "wb") as out:
        while piece := answer.read(CHUNK):
            written += len(piece)
            if written > limit:
                raise StepFailed(f"{url} is larger than the {limit}-byte download limit")
            out.write(piece)
    return written
