"""Worker "hosts" that share no directory, for the tests of runs that span hosts.

A :class:`Host` is a data directory of its own (its workspaces, its host id) and the
``conveyor worker`` processes started on it. The hosts of one :func:`cluster` share
only what machines of a real cluster share: a Postgres database of the test's own, a
Redis database and an S3 artifact store (a moto server of the test's own). A host may
also live in a network namespace of its own (``netns=True``): there 127.0.0.1 is the
namespace's loopback, where a relay of the host's forwards Postgres, Redis and S3
over unix sockets to a relay of the host's in the test's namespace, which reaches the
real services. Killing such a host (:meth:`Cluster.kill`: every process in the
namespace and both relays) cuts every connection it had, as a machine dying does.

Run as ``python -m tests.integration.hosts_kit [--lo-up] LISTEN=TARGET...`` this
module is that relay (``tcp:HOST:PORT`` or ``unix:PATH`` on each side).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from conveyor.orchestrator.store.records import EventRecord
from conveyor.orchestrator.store.sql import SqlStore
from tests.conftest import missing, new_pg_database
from tests.integration.s3_kit import client, empty, moto_server
from tests.integration.workers_kit import (
    Proc,
    Stack,
    kill_processes_under,
    redis_database,
    runners,
    stack,
)

#: The repository, on the relays' import path (they run ``-m tests.integration.hosts_kit``).
REPO = Path(__file__).resolve().parents[2]
BUCKET = "conveyor-hosts"
RELAY_READY = "relay ready"


@dataclass
class Host:
    """One worker host: its data directory, its processes, its network namespace."""

    name: str
    data_dir: Path
    procs: list[Proc] = field(default_factory=list)
    #: ``net:[inode]`` of the host's own network namespace (None: the test's).
    netns: str | None = None
    #: The pid whose namespace the host's processes enter.
    anchor: int | None = None
    #: The relay in the test's namespace (and its unix sockets' directory).
    outer: Proc | None = None
    sockets: Path | None = None

    def workspace(self, run_id: str) -> Path:
        """Where this host keeps its copy of a run's workspace."""
        return self.data_dir / "workspaces" / run_id


def loopback_up() -> None:
    """Bring ``lo`` up in this process's network namespace (a new one has it down)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, request)[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, _, rest = address.partition(":")
    if kind == "unix":
        return await asyncio.open_unix_connection(rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _serve(listen: str, target: str) -> asyncio.Server:
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await _open(target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))
        far_writer.close()
        writer.close()

    kind, _, rest = listen.partition(":")
    if kind == "unix":
        return await asyncio.start_unix_server(connected, rest)
    host, _, port = rest.rpartition(":")
    return await asyncio.start_server(connected, host, int(port), reuse_address=True)


async def relay(pairs: Sequence[tuple[str, str]]) -> None:
    """Forward every connection to each ``listen`` to its ``target``, until killed."""
    servers = [await _serve(listen, target) for listen, target in pairs]
    print(RELAY_READY, flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: Sequence[str]) -> None:
    """``[--lo-up] LISTEN=TARGET...``: the relay's command line."""
    if argv and argv[0] == "--lo-up":
        loopback_up()
        argv = argv[1:]
    asyncio.run(relay([tuple(arg.split("=", 1)) for arg in argv]))  # type: ignore[misc]


def endpoint(url: str) -> tuple[str, int]:
    """The loopback host and port of a service URL (a namespace can reach no other)."""
    parts = urlsplit(url)
    default = {"postgresql": 5432, "redis": 6379, "http": 80}.get(parts.scheme.split("+")[0], 0)
    host, port = parts.hostname or "127.0.0.1", parts.port or default
    if host not in ("127.0.0.1", "localhost"):
        missing("a loopback service", f"{url} is not on 127.0.0.1: a namespace cannot reach it")
    return "127.0.0.1", port


@dataclass
class Cluster:
    """Hosts of one test on one database, broker and S3 store; the test's own store."""

    workers: Stack
    store: SqlStore
    s3_endpoint: str
    hosts: dict[str, Host] = field(default_factory=dict)
    #: Worker node name (``-n``) -> the host it runs on.
    owners: dict[str, str] = field(default_factory=dict)

    def host(
        self,
        name: str,
        queues: Sequence[str],
        concurrency: int = 2,
        *,
        netns: bool = False,
        beat: bool = False,
        wait: bool = True,
        data_dir: Path | None = None,
    ) -> Host:
        """Start a host with one worker per entry of ``queues`` (``sandbox,control``...).

        Its workers are named ``<name>-<i>``; with ``beat`` it also runs ``conveyor
        beat`` (the reconciler's clock). Waits until every process is ready unless
        ``wait`` is false (then :meth:`ready` does). ``data_dir``: a directory it shares
        with other hosts (a shared volume), instead of one of its own.
        """
        host = Host(name, data_dir or self.workers.root / "hosts" / name)
        host.data_dir.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = host
        within: list[str] = []
        if netns:
            within = self._namespace(host)
        env = {"CONVEYOR_DATA_DIR": str(host.data_dir)}
        started: list[Proc] = []
        for i, queue in enumerate(queues):
            worker = f"{name}-{i}"
            self.owners[worker] = name
            started.append(self.workers.worker(worker, queue, concurrency, env=env, within=within))
        if beat:
            started.append(self.workers.beat(env=env, within=within))
        host.procs.extend(started)
        if wait:
            self.workers.wait_ready(*started)
        return host

    def ready(self) -> None:
        """Block until every process of every host is ready."""
        self.workers.wait_ready(*(p for host in self.hosts.values() for p in host.procs))

    def ran_on(self, events: list[EventRecord], step_key: str) -> list[str]:
        """The host of each attempt of a step, from its step.running events."""
        return [self.owners[worker] for worker in runners(events, step_key)]

    def kill(self, host: Host) -> None:
        """SIGKILL every process of the host at once: a machine that died.

        In a namespace of its own: every process in it (workers, their pool children,
        the steps' processes, the relay) and the relay outside; otherwise its workers'
        process groups and whatever runs in its data directory.
        """
        if host.netns is not None:
            for _ in range(100):
                pids = [pid for pid in _pids() if _netns_of(pid) == host.netns]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.02)
        for proc in [*host.procs, host.outer]:
            if isinstance(proc, Proc):
                proc.kill()
        kill_processes_under(host.data_dir)

    def close(self) -> None:
        """Kill every host; remove the relays' socket directories."""
        for host in self.hosts.values():
            self.kill(host)
            if host.sockets is not None:
                shutil.rmtree(host.sockets, ignore_errors=True)

    def _namespace(self, host: Host) -> list[str]:
        """Start the host's two relays (one in a new namespace); the nsenter prefix."""
        for tool in ("unshare", "nsenter"):
            if shutil.which(tool) is None:
                missing(tool, "util-linux makes the hosts' network namespaces")
        # A short directory: a unix socket's path is limited to 107 bytes.
        host.sockets = Path(tempfile.mkdtemp(prefix="cv-ns-"))
        services = {
            "pg": endpoint(self.workers.database_url),
            "redis": endpoint(self.workers.broker_url),
            "s3": endpoint(self.s3_endpoint),
        }
        outside = [f"unix:{host.sockets / k}.sock=tcp:{h}:{p}" for k, (h, p) in services.items()]
        inside = [f"tcp:{h}:{p}=unix:{host.sockets / k}.sock" for k, (h, p) in services.items()]
        relay = [sys.executable, "-m", "tests.integration.hosts_kit"]
        env = {"PYTHONPATH": str(REPO)}
        host.outer = self.workers.command(
            f"{host.name}-relay-out", [*relay, *outside], RELAY_READY, env
        )
        anchor = self.workers.command(
            f"{host.name}-relay-in",
            ["unshare", "--net", "--", *relay, "--lo-up", *inside],
            RELAY_READY,
            env,
        )
        host.procs.append(anchor)
        self.workers.wait_ready(host.outer, anchor)
        host.anchor = anchor.popen.pid
        host.netns = _netns_of(anchor.popen.pid)
        if host.netns is None or host.netns == _netns_of(os.getpid()):
            missing("network namespaces", f"the relay of {host.name} is not in a namespace")
        # Loopback only: the host can reach nothing but its relay.
        devices = Path(f"/proc/{host.anchor}/net/dev").read_text().splitlines()[2:]
        assert [line.split(":")[0].strip() for line in devices] == ["lo"], devices
        return ["nsenter", f"--net=/proc/{host.anchor}/ns/net", "--"]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _netns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None  # gone, or a zombie


def s3_env(endpoint_url: str) -> dict[str, str]:
    """The settings of the S3 artifact store every host (and the API) uses."""
    return {
        "CONVEYOR_ARTIFACT_STORE": "s3",
        "CONVEYOR_S3_BUCKET": BUCKET,
        "CONVEYOR_S3_ENDPOINT_URL": endpoint_url,
        "CONVEYOR_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@contextlib.contextmanager
def cluster(root: Path, **overrides: str) -> Iterator[Cluster]:
    """A Postgres database, a Redis database and an S3 store of the test's own.

    Hosts are started with :meth:`Cluster.host`; every process is killed, and the
    database dropped, however the test ends.
    """
    with (
        new_pg_database("conveyor_hosts") as database,
        redis_database() as broker,
        moto_server() as s3_endpoint,
    ):
        s3 = client(s3_endpoint)
        s3.create_bucket(Bucket=BUCKET)
        store = SqlStore(database)
        store.upgrade()
        env = {**s3_env(s3_endpoint), **overrides}
        try:
            with stack(database, broker, root, **env) as workers:
                result = Cluster(workers, store, s3_endpoint)
                try:
                    yield result
                finally:
                    result.close()
        finally:
            store.close()
            empty(s3, BUCKET)


if __name__ == "__main__":
    main(sys.argv[1:])
