"""``source: url`` pulls aimed inward: DNS rebinding, redirects, and every way of writing
an internal address. Real HTTP(S) servers on 127.0.0.1 stand in for both sides: one
``inside`` (what must never be reached) and one for "the internet", reached at a public
address that this test's network routes to it. Names are answered by a resolver the test
scripts (``socket.getaddrinfo``, the one the provider and every connection use), so a
name can answer one address to the check and another a moment later.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conveyor.orchestrator.errors import StepFailed
from conveyor.orchestrator.settings import Settings
from conveyor.providers.http import HttpFetch, check_url
from conveyor.providers.http.fetch import MAX_REDIRECTS

PUBLIC = "93.184.216.34"  # stands for a host on the internet: routed to the "public" server
INSIDE_ANSWER = "internal secret"
INWARD = "loopback, private or link-local"


@dataclass
class Site:
    """A web server on 127.0.0.1 that records what it was asked."""

    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    names: list[str | None] = field(default_factory=list)  # TLS server names asked for


def _serve(
    answer: Callable[[http.server.BaseHTTPRequestHandler, Site], None],
    context: ssl.SSLContext | None = None,
) -> Iterator[Site]:
    site = Site(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append((self.path, self.headers.get("Host", "")))
            answer(self, site)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what was asked, not the server's log."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        context.sni_callback = lambda sock, name, ctx: site.names.append(name)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    site.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site
    server.shutdown()
    server.server_close()


def _reply(
    handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str
) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _public_answer(handler: http.server.BaseHTTPRequestHandler, site: Site) -> None:
    """``/to?<url>`` redirects there; ``/hops/N`` redirects N more times; else a file."""
    path = handler.path
    if path.startswith("/to?"):
        _reply(handler, 302, Location=path[len("/to?") :])
    elif path.startswith("/hops/"):
        left = int(path.rsplit("/", 1)[1])
        if left:
            _reply(handler, 302, Location=f"/hops/{left - 1}")
        else:
            _reply(handler, 200, b"arrived")
    else:
        _reply(handler, 200, b"public " + path.encode())


@pytest.fixture
def inside() -> Iterator[Site]:
    """What a pull must never reach: a service on this host's loopback."""
    yield from _serve(lambda handler, site: _reply(handler, 200, INSIDE_ANSWER.encode()))


@pytest.fixture
def public() -> Iterator[Site]:
    """A server standing for one on the internet, at the address PUBLIC."""
    yield from _serve(_public_answer)


class Dns:
    """Scripted answers per name: each lookup takes the next answer, the last one stays."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.asked: list[str] = []

    def script(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def lookup(self, name: str) -> list[str] | None:
        if name not in self.answers:
            return None
        self.asked.append(name)
        queue = self.answers[name]
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch, public: Site) -> Dns:
    """Names the test scripts, and a network where PUBLIC leads to the ``public`` server.

    Connections to any other address but 127.0.0.1 are refused here: nothing leaves
    this host.
    """
    scripted = Dns()
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        found = scripted.lookup(name) if isinstance(name, str) else None
        if found is None:
            return real_getaddrinfo(host, port, *args, **kwargs)
        infos = []
        for address in found:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            where = (
                (address, port or 0, 0, 0) if family == socket.AF_INET6 else (address, port or 0)
            )
            infos.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", where))
        return infos

    def route(host: str, port: int, *args: Any, **kwargs: Any) -> socket.socket:
        if host == PUBLIC:
            return real_connect(("127.0.0.1", public.port), *args, **kwargs)
        if host != "127.0.0.1":
            raise ConnectionRefusedError(f"the test network does not route {host}")
        return real_connect((host, port), *args, **kwargs)

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        try:
            return route(str(ipaddress.ip_address(host)), port, *args, **kwargs)
        except ValueError:  # a name: resolved here (scripted or not), then routed
            pass
        problem: OSError = ConnectionRefusedError(f"{host} has no address")
        for info in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            try:
                return route(str(info[4][0]), port, *args, **kwargs)
            except OSError as exc:
                problem = exc
        raise problem

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return scripted


@pytest.fixture
def fetch(settings: Settings) -> HttpFetch:
    """The provider under the default policy: nothing inside the network."""
    assert settings.allow_private_urls is False
    return HttpFetch(settings)


def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_it(
    fetch: HttpFetch, dns: Dns, inside: Site, public: Site, tmp_path: Path
) -> None:
    """Given a name that answers a public address first and 127.0.0.1 from then on."""
    dns.script("rebind.example", [PUBLIC], ["127.0.0.1"])
    url = f"http://rebind.example:{inside.port}/secret"

    size = fetch.fetch(url, tmp_path / "got", limit=1000)

    # Then the download came from the address that was checked, never from inside
    assert (tmp_path / "got").read_text() == "public /secret" and size == 14
    assert inside.requests == []
    assert public.requests == [("/secret", f"rebind.example:{inside.port}")]
    assert dns.asked == ["rebind.example"]  # one lookup: the address checked is the one used


def test_every_hop_of_a_redirect_connects_to_the_address_it_checked(
    fetch: HttpFetch, dns: Dns, inside: Site, public: Site, tmp_path: Path
) -> None:
    """Given a public page redirecting to a name that rebinds between check and connect."""
    dns.script("start.example", [PUBLIC])
    dns.script("hop.example", [PUBLIC], ["127.0.0.1"])
    url = f"http://start.example:1/to?http://hop.example:{inside.port}/secret"

    fetch.fetch(url, tmp_path / "got", limit=1000)

    assert (tmp_path / "got").read_text() == "public /secret"
    assert inside.requests == []
    assert dns.asked == ["start.example", "hop.example"]


INWARD_LOCATIONS = [
    "http://127.0.0.1:{port}/secret",
    "http://localhost:{port}/secret",
    "http://inside.example:{port}/secret",
    "http://[::ffff:127.0.0.1]:{port}/secret",
    "http://[::127.0.0.1]:{port}/secret",
    "http://2130706433:{port}/secret",
    "http://0x7f.1:{port}/secret",
    "http://017700000001:{port}/secret",
    "http://127.1:{port}/secret",
    "//127.0.0.1:{port}/secret",
    "http://[64:ff9b::127.0.0.1]:{port}/secret",
    "http://[2002:7f00:1::]:{port}/secret",
]


@pytest.mark.parametrize("location", INWARD_LOCATIONS)
def test_a_redirect_inward_is_refused_in_any_spelling(
    fetch: HttpFetch, dns: Dns, inside: Site, tmp_path: Path, location: str
) -> None:
    dns.script("start.example", [PUBLIC])
    dns.script("inside.example", ["127.0.0.1"])
    target = location.format(port=inside.port)

    with pytest.raises(StepFailed, match=INWARD) as refused:
        fetch.fetch(f"http://start.example/to?{target}", tmp_path / "got", limit=1000)

    assert "127.0.0.1" in str(refused.value)  # it says what the address really is
    assert inside.requests == [] and not (tmp_path / "got").exists()


def test_redirects_stop_after_the_limit(fetch: HttpFetch, dns: Dns, tmp_path: Path) -> None:
    dns.script("start.example", [PUBLIC])

    fetch.fetch(f"http://start.example/hops/{MAX_REDIRECTS}", tmp_path / "ok", limit=100)
    with pytest.raises(StepFailed, match=rf"more than {MAX_REDIRECTS} redirects$"):
        fetch.fetch(f"http://start.example/hops/{MAX_REDIRECTS + 1}", tmp_path / "no", limit=100)

    assert (tmp_path / "ok").read_text() == "arrived"


def test_the_operators_allowance_still_reaches_this_host(
    settings: Settings, inside: Site, tmp_path: Path
) -> None:
    """With allow_private_urls (how tests and private mirrors fetch from inside)."""
    allowed = HttpFetch(settings.model_copy(update={"allow_private_urls": True}))

    allowed.fetch(f"http://127.0.0.1:{inside.port}/x", tmp_path / "got", limit=100)

    assert (tmp_path / "got").read_text() == INSIDE_ANSWER


# -- every spelling of an internal address, checked without any network -----------------

NEVER_ASKED: Callable[[str], list[str]] = lambda host: pytest.fail(f"{host} was resolved")  # noqa: E731

INTERNAL_HOSTS = [
    ("127.0.0.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),  # decimal
    ("017700000001", "127.0.0.1"),  # octal
    ("0x7f000001", "127.0.0.1"),  # hex
    ("0x7f.1", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0.0.0.0", "0.0.0.0"),
    ("10.0.0.1", "10.0.0.1"),
    ("172.16.0.1", "172.16.0.1"),
    ("192.168.1.1", "192.168.1.1"),
    ("169.254.169.254", "169.254.169.254"),  # cloud metadata
    ("2852039166", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("100.100.100.200", "100.100.100.200"),  # metadata behind carrier-grade NAT space
    ("192.0.0.170", "192.0.0.170"),
    ("192.88.99.1", "192.88.99.1"),
    ("198.18.0.1", "198.18.0.1"),
    ("224.0.0.1", "224.0.0.1"),
    ("240.0.0.1", "240.0.0.1"),
    ("255.255.255.255", "255.255.255.255"),
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # fullwidth, as IDNA reads it
    ("[::1]", "::1"),
    ("[::]", "::"),
    ("[::127.0.0.1]", "127.0.0.1"),  # IPv4-compatible
    ("[::7f00:1]", "127.0.0.1"),
    ("[::ffff:127.0.0.1]", "127.0.0.1"),  # IPv4-mapped
    ("[::ffff:7f00:1]", "127.0.0.1"),
    ("[::ffff:169.254.169.254]", "169.254.169.254"),
    ("[::ffff:0:127.0.0.1]", "127.0.0.1"),  # IPv4-translated
    ("[64:ff9b::127.0.0.1]", "127.0.0.1"),  # NAT64
    ("[64:ff9b::a00:1]", "10.0.0.1"),
    ("[64:ff9b:1::1]", "local-use NAT64"),
    ("[2002:7f00:1::1]", "127.0.0.1"),  # 6to4
    ("[2002:a9fe:a9fe::]", "169.254.169.254"),
    ("[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "Teredo"),
    ("[fd00:ec2::254]", "fd00:ec2::254"),  # cloud metadata over IPv6
    ("[fe80::1]", "fe80::1"),
    ("[fe80::1%25eth0]", "fe80::1"),
    ("[fec0::1]", "fec0::1"),
    ("[ff02::1]", "ff02::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[100::1]", "100::1"),
]


@pytest.mark.parametrize(("host", "shown"), INTERNAL_HOSTS)
def test_internal_addresses_are_refused_however_they_are_written(host: str, shown: str) -> None:
    """Numeric hosts are read as addresses by the guard itself, never handed to a resolver."""
    with pytest.raises(StepFailed) as refused:
        check_url(f"http://{host}:8080/x", allow_private=False, resolver=NEVER_ASKED)

    message = str(refused.value)
    assert INWARD in message and shown in message and "allow_private_urls" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "address",
    [a for a, _ in INTERNAL_HOSTS if a.startswith("[") and "%" not in a]
    + ["127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1"],
)
def test_a_name_resolving_to_any_internal_address_is_refused(address: str) -> None:
    ip = address.strip("[]")
    with pytest.raises(StepFailed, match=INWARD):
        check_url("https://looks-public.example/x", allow_private=False, resolver=lambda h: [ip])


def test_one_internal_answer_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(StepFailed, match=INWARD):
        check_url(
            "https://mixed.example/x",
            allow_private=False,
            resolver=lambda h: [PUBLIC, "2606:2800:220:1::1", "::ffff:10.0.0.1"],
        )


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.0.0.1", "0x100000000", "1.0x100.0.0", "09.1.1.1", "example.0"]
)
def test_a_host_that_looks_numeric_but_is_no_address_is_refused(host: str) -> None:
    with pytest.raises(StepFailed, match="neither a host name nor a valid IPv4 address"):
        check_url(f"http://{host}/x", allow_private=False, resolver=NEVER_ASKED)


@pytest.mark.parametrize(
    ("host", "addresses"),
    [
        ("93.184.216.34", []),
        ("1571214370", []),  # 93.184.216.34 as one number: still public
        ("[2606:2800:220:1:248:1893:25c8:1946]", []),
        ("[::ffff:93.184.216.34]", []),
        ("[64:ff9b::93.184.216.34]", []),
        ("example.com", [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]),
    ],
)
def test_public_addresses_pass(host: str, addresses: list[str]) -> None:
    check_url(f"https://{host}/x", allow_private=False, resolver=lambda h: addresses)


# -- https: the connection goes to the checked address, TLS still speaks to the name ---


@dataclass
class Pki:
    """A CA of the test's own, trusted through SSL_CERT_FILE, and a server certificate."""

    ca_file: Path
    server: ssl.SSLContext


def _certificate(tmp_path: Path, name: str) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Conveyor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(
        leaf.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem")
    return Pki(tmp_path / "ca.pem", server)


@pytest.fixture
def tls_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dns: Dns, public: Site
) -> Iterator[Site]:
    """The "public" side over https, with a certificate for secure.example only."""
    pki = _certificate(tmp_path, "secure.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    for site in _serve(_public_answer, pki.server):
        public.port = site.port  # PUBLIC now leads to the TLS server
        yield site


def test_https_goes_to_the_checked_address_and_verifies_the_name(
    fetch: HttpFetch, dns: Dns, tls_public: Site, inside: Site, tmp_path: Path
) -> None:
    dns.script("secure.example", [PUBLIC], ["127.0.0.1"])

    fetch.fetch(f"https://secure.example:{inside.port}/tool", tmp_path / "got", limit=100)

    assert (tmp_path / "got").read_text() == "public /tool"
    assert tls_public.names == ["secure.example"]  # SNI: the name, not the address
    assert tls_public.requests == [("/tool", f"secure.example:{inside.port}")]
    assert inside.requests == []


def test_https_to_a_name_the_certificate_does_not_cover_fails(
    fetch: HttpFetch, dns: Dns, tls_public: Site, tmp_path: Path
) -> None:
    dns.script("other.example", [PUBLIC])

    with pytest.raises(
        StepFailed, match=r"^https://other.example/tool: .*certificate verify failed"
    ):
        fetch.fetch("https://other.example/tool", tmp_path / "got", limit=100)

    assert tls_public.requests == []
