"""Handing a run's workspace to another host through the artifact store, against tar.

A tree of 5,000 files (200 MB by default, mixed sizes from a seeded RNG) is handed from
host A to host B, two data directories that share nothing but the artifact store:

(a) the handoff: ``publish`` on A (hash every file, store the blobs the store lacks,
    a manifest, move the head) then ``prepare`` on B (fetch and place every file);
(b) the baseline, in the same run: ``tar c`` of the tree into a file, ``put`` into the
    same store as one artifact, ``get`` on the other side and ``tar x``.

Then (c): one file changed on B and handed back to A: the files and bytes uploaded and
fetched (goal: that file only) and its time. Each of (a) and (b) runs ``--repeat``
times, interleaved, on fresh hosts and a fresh run; medians are printed with the ratio
(goal: (a) at most 1.5x (b)). ``--s3`` runs the same through the S3 store on a moto
server of its own. Figures only, no assertion on time.

Before each timed part the file system is synced, so that neither pays for writing
out what the untimed setup (or the part before) left in memory: both (a) and (b) sync
what they store themselves, and one's writes would otherwise fall on the other.

    python bench/workspace_handoff.py [--files 5000] [--size-mb 200] [--repeat 3] [--s3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from artifact_throughput import moto

from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.testing.workspaces import MemoryWorkspaceRecords
from conveyor.orchestrator.workspaces import WorkspaceHandoff
from conveyor.providers.local import LocalArtifactStore

MB = 1000 * 1000


def make_tree(root: Path, files: int, size: int, seed: int = 7) -> None:
    """``files`` files under nested directories, ``size`` bytes in all, mixed sizes.

    Most files are small, a few are large (a long tail, as a checkout with build output
    has); contents are random so nothing deduplicates by chance.
    """
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = size / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += size - sum(sizes)
    for n, length in enumerate(sizes):
        where = root / f"d{n % 37:02}" / f"e{n % 11}" / f"f{n:05}.bin"
        where.parent.mkdir(parents=True, exist_ok=True)
        with open(where, "wb") as out:
            left = length
            while left > 0:
                piece = min(left, 1 << 20)
                out.write(rng.randbytes(piece))
                left -= piece
        if n % 13 == 0:
            where.chmod(0o755)


class Hosts:
    """Two hosts (A, B) of one run, sharing only ``store`` and the heads."""

    def __init__(self, base: Path, store: Any, run: str) -> None:
        heads = MemoryWorkspaceRecords()
        self.run = run
        self.a = WorkspaceHandoff(
            base / "a" / "ws", base / "a" / "state", lambda: store, heads, "a"
        )
        self.b = WorkspaceHandoff(
            base / "b" / "ws", base / "b" / "state", lambda: store, heads, "b"
        )


def handoff(base: Path, tree: Path, store: Any, run: str) -> tuple[float, Hosts, Any]:
    """Seconds to publish ``tree`` on A and prepare it on B."""
    hosts = Hosts(base, store, run)
    hosts.a.workspace(run).parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(tree), str(hosts.a.workspace(run))], check=True)
    baseline = hosts.a.prepare(run)
    os.sync()  # the copy above is on disk: not part of what is timed
    start = time.perf_counter()
    published = hosts.a.publish(run, baseline)
    hosts.b.prepare(run)
    return time.perf_counter() - start, hosts, published


def tar(base: Path, tree: Path, store: Any, run: str) -> float:
    """Seconds to ``tar c`` the tree, put it, get it and ``tar x`` it on the other side."""
    archive, fetched, dest = base / "ws.tar", base / "fetched.tar", base / "b-ws"
    dest.mkdir(parents=True)
    os.sync()  # what ran before is on disk: not part of what is timed
    start = time.perf_counter()
    subprocess.run(["tar", "cf", str(archive), "-C", str(tree), "."], check=True)
    store.put(run, "workspace.tar", archive)
    store.get(run, "workspace.tar", fetched)
    subprocess.run(["tar", "xf", str(fetched), "-C", str(dest)], check=True)
    return time.perf_counter() - start


def one_file(hosts: Hosts) -> tuple[float, Any, Any]:
    """Change one file on B, hand it back to A: seconds, what was published and fetched."""
    baseline = hosts.b.prepare(hosts.run)
    target = next(p for p in sorted(hosts.b.workspace(hosts.run).rglob("*.bin")))
    os.sync()  # the handoff before is on disk: not part of what is timed
    start = time.perf_counter()
    with open(target, "r+b") as out:
        out.write(b"changed")
    published = hosts.b.publish(hosts.run, baseline)
    fetched = hosts.a.prepare(hosts.run)
    return time.perf_counter() - start, published, fetched.fetched


def rounds(tmp: Path, tree: Path, store: Any, repeat: int, name: str) -> None:
    tag = name.split(maxsplit=1)[0]  # run ids are plain names
    ours: list[float] = []
    theirs: list[float] = []
    last: Any = None
    for n in range(repeat):
        work = tmp / f"{name}-{n}"
        theirs.append(tar(work / "tar", tree, store, f"tar-{n}-{tag}"))
        seconds, hosts, published = handoff(work / "handoff", tree, store, f"ws-{n}-{tag}")
        ours.append(seconds)
        last = (hosts, published)
        store.delete_run(f"tar-{n}-{tag}")
        if n < repeat - 1:
            store.delete_run(f"ws-{n}-{tag}")
            shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    hosts, published = last
    print(f"\n{name}: {published.files_uploaded} files, {published.bytes_uploaded / MB:.1f} MB")
    print(f"  (a) publish on A + prepare on B   {a:7.3f} s  (median of {repeat})")
    print(f"  (b) tar c | put | get | tar x      {b:7.3f} s")
    print(f"  ratio (a)/(b)                      {a / b:7.2f}x  (goal <= 1.5x)")
    seconds, pub, fetched = one_file(hosts)
    print(
        f"  (c) one file changed on B, to A:   {seconds:7.3f} s; uploaded {pub.files_uploaded} "
        f"file(s), {pub.bytes_uploaded} bytes; hashed {pub.files_hashed}; fetched "
        f"{fetched.files_fetched} file(s), {fetched.bytes_fetched} bytes (goal: that file only)"
    )


@contextmanager
def local_store(tmp: Path) -> Iterator[LocalArtifactStore]:
    yield LocalArtifactStore(Settings(data_dir=tmp / "data"), root=tmp / "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="Also through S3 on a moto server.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as name:
        tmp = Path(name)
        tree = tmp / "tree"
        make_tree(tree, args.files, args.size_mb * MB)
        with local_store(tmp) as store:
            rounds(tmp, tree, store, args.repeat, "local store")
        if args.s3:
            with moto(tmp) as s3:
                if s3 is None:
                    print("\ns3 store: skipped (moto is not installed)")
                else:
                    rounds(tmp, tree, s3, max(1, args.repeat // 2), "s3 store on moto")


if __name__ == "__main__":
    main()
