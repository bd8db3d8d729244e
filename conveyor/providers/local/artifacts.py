"""Artifacts on the local disk, under ``<data_dir>/artifacts/<run_id>/<key>``.

Each artifact is written to a temporary file beside its place, checksummed while it
streams, then renamed into place with its metadata: a crash leaves the old version or
nothing, never half a file. Metadata lives in a sidecar ``<key>.meta.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from conveyor.orchestrator.artifacts import (
    Artifact,
    copy_hashed,
    validate_key,
    validate_run_id,
)
from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound, ChecksumMismatch
from conveyor.orchestrator.settings import Settings

META = ".meta.json"


class LocalArtifactStore:
    """The ArtifactStore of the embedded shape (and of single-host setups)."""

    def __init__(self, settings: Settings, root: Path | None = None) -> None:
        self.root = (root or settings.data_dir / "artifacts").resolve()

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        """Store ``src`` under ``key``, replacing any artifact of that key at once."""
        target = self._path(run_id, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with open(src, "rb") as source, os.fdopen(handle, "wb") as out:
                # On disk before the rename: a crash leaves the old artifact or none.
                checksum, size = copy_hashed(source, out, sync=True)
            artifact = Artifact(key, size, checksum, datetime.now(UTC), kind)
            _write_meta(target, artifact)
            os.replace(name, target)
        except OSError as exc:
            raise ArtifactError(f"could not store {key}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        return artifact

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
        artifact = _read_meta(target, key)
        try:
            return artifact, open(target, "rb")  # the caller closes it
        except FileNotFoundError:
            raise ArtifactNotFound(f"run {run_id} has no artifact {key}") from None

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of a run, by key."""
        base = self.root / validate_run_id(run_id)
        if not base.is_dir():
            return []
        found = []
        for meta in base.rglob("*" + META):
            key = str(meta.relative_to(base))[: -len(META)]
            with contextlib.suppress(ArtifactError):  # one being written right now
                found.append(_read_meta(base / key, key))
        return sorted(found, key=lambda a: a.key)

    def delete(self, run_id: str, key: str) -> None:
        """Remove one artifact."""
        target = self._path(run_id, key)
        if not target.exists():
            raise ArtifactNotFound(f"run {run_id} has no artifact {key}")
        target.unlink()
        target.with_name(target.name + META).unlink(missing_ok=True)

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of a run."""
        count = len(self.list(run_id))
        shutil.rmtree(self.root / validate_run_id(run_id), ignore_errors=True)
        return count

    def _path(self, run_id: str, key: str) -> Path:
        return self.root / validate_run_id(run_id) / validate_key(key)


def _write_meta(target: Path, artifact: Artifact) -> None:
    meta = target.with_name(target.name + META)
    data = {
        "size": artifact.size,
        "checksum": artifact.checksum,
        "created_at": artifact.created_at.isoformat(),
        "kind": artifact.kind,
    }
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, meta)


def _read_meta(target: Path, key: str) -> Artifact:
    try:
        data = json.loads(target.with_name(target.name + META).read_text())
    except FileNotFoundError:
        raise ArtifactNotFound(f"no artifact {key}") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {key} has unreadable metadata: {exc}") from exc
    created = datetime.fromisoformat(data["created_at"])
    kind = str(data.get("kind", "file"))
    return Artifact(key, int(data["size"]), str(data["checksum"]), created, kind)
