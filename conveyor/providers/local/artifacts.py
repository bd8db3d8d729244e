"""Artifacts on the local disk, under ``<data_dir>/artifacts/<run_id>/<key>``.

Each artifact is written to a temporary file beside its place, checksummed while it
streams, then renamed into place with its metadata: a crash leaves the old version or
nothing, never half a file.

Metadata (size, checksum, kind) lives in a tree of its own, ``<run_id>/.meta/<key>``,
where no key can reach: every part of a key starts with a letter or digit, so no key
names ``.meta`` (nor the ``.upload-`` and ``.tmp-`` files being written). Stores written
before kept it in a sidecar ``<key>.meta.json`` beside the file, a name another key
could overwrite; such a sidecar is still read, and moved into the tree, unless that name
is itself an artifact's (then it is an artifact, never metadata). A run's source
archive (``conveyor submit --source``) is ``<run_id>/.source.tar.gz``, out of reach for
the same reason, and goes with the run's artifacts; so do the blobs, packs and manifests
of its workspace (``WorkspaceBlobs``), under ``<run_id>/.blobs/<sha256>``,
``<run_id>/.packs/<sha256>`` and ``<run_id>/.manifests/<sha256>``. Each is written as an
artifact is: to a temporary file, synced to disk, then renamed into place whole, so a
manifest is only ever written once the blobs and packs it names are on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from conveyor.orchestrator.artifacts import (
    Artifact,
    copy_hashed,
    validate_digest,
    validate_key,
    validate_run_id,
)
from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound, ChecksumMismatch
from conveyor.orchestrator.settings import Settings

META_DIR = ".meta"
#: The run's source archive (and its metadata's name in the tree): no key names it.
SOURCE = ".source.tar.gz"
#: The sidecar of stores written before the metadata tree (read, then migrated).
LEGACY = ".meta.json"
#: A run's workspace contents and manifests, by SHA-256 (``WorkspaceBlobs``).
BLOBS = ".blobs"
PACKS = ".packs"
MANIFESTS = ".manifests"
#: Past this many digests asked about, the blob folder is listed once instead.
LIST_PAST = 64
CHUNK = 1024 * 1024


class LocalArtifactStore:
    """The ArtifactStore of the embedded shape (and of single-host setups)."""

    def __init__(self, settings: Settings, root: Path | None = None) -> None:
        self.root = (root or settings.artifact_root).resolve()

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        """Store ``src`` under ``key``, replacing any artifact of that key at once."""
        target = self._path(run_id, key)
        if key.endswith(LEGACY):  # the file may be an older artifact's sidecar: keep it
            with contextlib.suppress(ArtifactError):
                self._load(run_id, key[: -len(LEGACY)])
        return _store(target, self._meta(run_id, key), src, key, kind)

    # -- the run's source archive: ``<run_id>/.source.tar.gz``, out of every key's reach

    def put_source(self, run_id: str, src: Path) -> Artifact:
        """Store the run's source archive (see ``RunSources``)."""
        target, meta = self._source(run_id)
        return _store(target, meta, src, SOURCE, "source")

    def open_source(self, run_id: str) -> tuple[Artifact, BinaryIO]:
        """The run's source archive and a stream of it."""
        target, meta = self._source(run_id)
        artifact = _read_meta(meta, SOURCE)
        try:
            return artifact, open(target, "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"run {run_id} has no source archive") from None

    def delete_source(self, run_id: str) -> None:
        """Remove the run's source archive, if it has one."""
        target, meta = self._source(run_id)
        target.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)

    # -- a run's workspace between hosts: blobs and manifests by SHA-256 (WorkspaceBlobs)

    def missing_blobs(self, run_id: str, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` not stored for the run."""
        base = self.root / validate_run_id(run_id) / BLOBS
        wanted = {validate_digest(d) for d in digests}
        if len(wanted) > LIST_PAST:
            try:
                return wanted - set(os.listdir(base))
            except FileNotFoundError:
                return wanted
        return {d for d in wanted if not (base / d).is_file()}

    def put_blob(self, run_id: str, digest: str, src: Path) -> None:
        """Store ``src`` as the blob ``digest`` (checked as it is copied)."""
        target = self.root / validate_run_id(run_id) / BLOBS / validate_digest(digest)
        if target.is_file():
            return  # the same bytes, stored already
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        except OSError as exc:
            raise ArtifactError(f"could not store blob {digest}: {exc.strerror or exc}") from None
        try:
            hasher = hashlib.sha256()  # here, not on a thread: most blobs are small
            with open(src, "rb") as source, os.fdopen(handle, "wb") as out:
                while piece := source.read(CHUNK):
                    hasher.update(piece)
                    out.write(piece)
                if hasher.hexdigest() != digest:
                    raise ChecksumMismatch(f"blob {digest} changed while it was stored")
                out.flush()
                os.fsync(out.fileno())  # on disk before the rename, as an artifact
            os.replace(name, target)
        except OSError as exc:
            raise ArtifactError(f"could not store blob {digest}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def open_blob(self, run_id: str, digest: str) -> BinaryIO:
        """A stream of the blob ``digest``."""
        target = self.root / validate_run_id(run_id) / BLOBS / validate_digest(digest)
        try:
            return open(target, "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"run {run_id} has no blob {digest}") from None

    def put_pack(self, run_id: str, data: bytes) -> str:
        """Store ``data`` as the pack named by its SHA-256; that name."""
        digest = hashlib.sha256(data).hexdigest()
        _write_whole(self.root / validate_run_id(run_id) / PACKS / digest, data, "pack")
        return digest

    def read_pack(self, run_id: str, digest: str, start: int, length: int) -> bytes:
        """``length`` bytes of the pack ``digest`` from ``start`` (fewer where it ends)."""
        target = self.root / validate_run_id(run_id) / PACKS / validate_digest(digest)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"run {run_id} has no pack {digest}") from None
        except OSError as exc:
            raise ArtifactError(f"could not read pack {digest}: {exc.strerror}") from None
        try:
            length = min(length, os.fstat(fd).st_size - start)  # what a manifest says may lie
            pieces: list[bytes] = []
            while length > 0 and (piece := os.pread(fd, length, start)):
                pieces.append(piece)
                start, length = start + len(piece), length - len(piece)
        except OSError as exc:
            raise ArtifactError(f"could not read pack {digest}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def put_manifest(self, run_id: str, digest: str, data: bytes) -> None:
        """Store a workspace manifest (the blobs and packs it names are on disk already)."""
        if hashlib.sha256(data).hexdigest() != validate_digest(digest):
            raise ChecksumMismatch(f"manifest {digest} does not match its digest")
        _write_whole(self.root / validate_run_id(run_id) / MANIFESTS / digest, data, "manifest")

    def get_manifest(self, run_id: str, digest: str) -> bytes:
        """The workspace manifest ``digest``."""
        target = self.root / validate_run_id(run_id) / MANIFESTS / validate_digest(digest)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"run {run_id} has no workspace manifest {digest}") from None

    def _source(self, run_id: str) -> tuple[Path, Path]:
        base = self.root / validate_run_id(run_id)
        return base / SOURCE, base / META_DIR / SOURCE

    def get(self, run_id: str, key: str, dest: Path) -> Artifact:
        """Copy the artifact to ``dest``, checking its SHA-256 on the way."""
        artifact, stream = self.open(run_id, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with stream, open(dest, "wb") as out:
                checksum, _ = copy_hashed(stream, out)
        except OSError as exc:
            raise ArtifactError(f"could not write {dest.name}: {exc.strerror or exc}") from exc
        if checksum != artifact.checksum:
            dest.unlink(missing_ok=True)
            raise ChecksumMismatch(f"artifact {key} of run {run_id} is corrupt (checksum mismatch)")
        return artifact

    def open(self, run_id: str, key: str) -> tuple[Artifact, BinaryIO]:
        """The artifact's metadata and its content as a stream."""
        target = self._path(run_id, key)
        artifact = self._load(run_id, key)
        try:
            return artifact, open(target, "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"run {run_id} has no artifact {key}") from None

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of a run, by key."""
        base = self.root / validate_run_id(run_id)
        if not base.is_dir():
            return []
        found: dict[str, Artifact] = {}
        tree = base / META_DIR
        for meta in tree.rglob("*"):
            key = meta.relative_to(tree).as_posix()
            if meta.is_file() and not meta.name.startswith("."):
                with contextlib.suppress(ArtifactError):  # one being written right now
                    found[key] = self._load(run_id, key)
        for sidecar in base.rglob("*" + LEGACY):  # stores written before the tree
            key = sidecar.relative_to(base).as_posix()[: -len(LEGACY)]
            if key not in found and not key.startswith(META_DIR + "/"):
                with contextlib.suppress(ArtifactError):
                    if (base / validate_key(key)).is_file():
                        found[key] = self._load(run_id, key)
        return sorted(found.values(), key=lambda a: a.key)

    def delete(self, run_id: str, key: str) -> None:
        """Remove one artifact."""
        target = self._path(run_id, key)
        if not target.is_file():
            raise ArtifactNotFound(f"run {run_id} has no artifact {key}")
        legacy = self._legacy(run_id, key)
        target.unlink()
        self._meta(run_id, key).unlink(missing_ok=True)
        if legacy is not None:
            legacy.unlink(missing_ok=True)

    def delete_workspace(self, run_id: str) -> int:
        """Remove the run's workspace blobs, packs and manifests; how many files went."""
        count = 0
        for name in (BLOBS, PACKS, MANIFESTS):
            folder = self.root / validate_run_id(run_id) / name
            with contextlib.suppress(FileNotFoundError):
                count += sum(1 for p in folder.iterdir() if not p.name.startswith("."))
            shutil.rmtree(folder, ignore_errors=True)
        return count

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of a run."""
        count = len(self.list(run_id))
        shutil.rmtree(self.root / validate_run_id(run_id), ignore_errors=True)
        return count

    def _path(self, run_id: str, key: str) -> Path:
        return self.root / validate_run_id(run_id) / validate_key(key)

    def _meta(self, run_id: str, key: str) -> Path:
        """Where the metadata of ``key`` lives: a tree no key can name."""
        return self.root / validate_run_id(run_id) / META_DIR / validate_key(key)

    def _legacy(self, run_id: str, key: str) -> Path | None:
        """The old-layout sidecar of ``key``, unless that path is an artifact itself."""
        sidecar = self._path(run_id, key).with_name(self._path(run_id, key).name + LEGACY)
        try:
            as_key = validate_key(key + LEGACY)
        except ArtifactError:  # no key can have that name: it can only be a sidecar
            return sidecar
        if self._meta(run_id, as_key).exists() or sidecar.with_name(sidecar.name + LEGACY).exists():
            return None  # stored as an artifact (now, or by the old layout with a sidecar)
        return sidecar

    def _load(self, run_id: str, key: str) -> Artifact:
        """The metadata of ``key``: from the tree, or (once, then moved) an old sidecar."""
        meta = self._meta(run_id, key)
        try:
            return _read_meta(meta, key)
        except ArtifactNotFound:
            legacy = self._legacy(run_id, key)
            if legacy is None:
                raise
        artifact = _read_meta(legacy, key)
        with contextlib.suppress(OSError):  # a read-only store still reads
            _write_meta(meta, artifact)
        return artifact


def _store(target: Path, meta: Path, src: Path, key: str, kind: str) -> Artifact:
    """Write ``src`` at ``target`` with its metadata at ``meta``: all or nothing."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    except OSError as exc:  # a part of the key is a file already (`a` for `a/b`)
        raise ArtifactError(f"could not store {key}: {exc.strerror or exc}") from None
    try:
        with open(src, "rb") as source, os.fdopen(handle, "wb") as out:
            # On disk before the rename: a crash leaves the old artifact or none.
            checksum, size = copy_hashed(source, out, sync=True)
        artifact = Artifact(key, size, checksum, datetime.now(UTC), kind)
        _write_meta(meta, artifact)
        os.replace(name, target)
    except OSError as exc:
        raise ArtifactError(f"could not store {key}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return artifact


def _write_whole(target: Path, data: bytes, what: str) -> None:
    """Write ``data`` at ``target`` (named by its digest): synced, then renamed into place."""
    if target.is_file():
        return  # the same bytes, stored already
    name = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, target)
    except OSError as exc:
        raise ArtifactError(f"could not store {what} {target.name}: {exc.strerror}") from exc
    finally:
        if name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def _write_meta(meta: Path, artifact: Artifact) -> None:
    data = {
        "size": artifact.size,
        "checksum": artifact.checksum,
        "created_at": artifact.created_at.isoformat(),
        "kind": artifact.kind,
    }
    meta.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=meta.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(data))
        os.replace(tmp, meta)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_meta(meta: Path, key: str) -> Artifact:
    try:
        data = json.loads(meta.read_text())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ArtifactNotFound(f"no artifact {key}") from None
    except OSError as exc:  # its strerror: the message would name the store's path
        raise ArtifactError(f"artifact {key} has unreadable metadata: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"artifact {key} has unreadable metadata: {exc}") from None
    try:
        created = datetime.fromisoformat(data["created_at"])
        kind = str(data.get("kind", "file"))
        return Artifact(key, int(data["size"]), str(data["checksum"]), created, kind)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"artifact {key} has unreadable metadata: {exc!r}") from exc
