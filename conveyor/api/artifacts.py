"""Routes of a run's artifacts: list them, download one (streamed), delete one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import BinaryIO

from flask import Response

from conveyor.orchestrator.artifacts import Artifact, chunks, explain_missing
from conveyor.orchestrator.errors import ArtifactNotFound

from .models import ArtifactList, ArtifactModel
from .routing import Call


def list_artifacts(call: Call[None, None], run_id: str) -> ArtifactList:
    """Every artifact of a run, by key."""
    run = call.services.store.find_run(run_id)
    return ArtifactList(items=[_model(a) for a in call.services.artifacts().list(run.id)])


def get_artifact(call: Call[None, None], run_id: str, key: str) -> Response:
    """The artifact's bytes, streamed; its SHA-256 in ``X-Checksum-Sha256``."""
    run = call.services.store.find_run(run_id)
    try:
        artifact, stream = call.services.artifacts().open(run.id, key)
    except ArtifactNotFound:
        explain_missing(call.services.store, run.id, key)  # 404 that says "expired"
        raise
    name = key.rsplit("/", 1)[-1] + (".tar" if artifact.kind == "dir" else "")
    headers = {
        "Content-Length": str(artifact.size),
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Checksum-Sha256": artifact.checksum,
        "X-Artifact-Kind": artifact.kind,
    }
    return Response(_chunks(stream), mimetype="application/octet-stream", headers=headers)


def delete_artifact(call: Call[None, None], run_id: str, key: str) -> Response:
    """Remove one artifact (admins only)."""
    run = call.services.store.find_run(run_id)
    call.services.artifacts().delete(run.id, key)
    return Response(status=204)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    with stream:  # closed when the download ends, or the client goes away
        yield from chunks(stream)


def _model(artifact: Artifact) -> ArtifactModel:
    return ArtifactModel.model_validate(asdict(artifact))
