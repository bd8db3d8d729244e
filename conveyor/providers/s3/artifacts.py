"""Artifacts in S3 or anything that speaks its API (MinIO, DigitalOcean Spaces, R2).

Objects live at ``<prefix>/<run_id>/<key>`` with their SHA-256 in the object metadata:
metadata travels with its object, so no other key (``<key>.meta.json`` included) can
reach it.
An upload becomes visible only when it is complete (S3's own guarantee for single and
multipart uploads), so readers never see half an artifact.

A run's workspace between hosts (``WorkspaceBlobs``) lives beside its artifacts as
``<run_id>/.blobs/<sha256>``, ``<run_id>/.packs/<sha256>`` and
``<run_id>/.manifests/<sha256>``, where no key reaches: never listed, removed by
``delete_run``. A small blob, a pack and a manifest are sent with their SHA-256 for S3
to check; a part of a pack is read with one ranged GET; asked about many blobs at once,
the store lists the run's blobs once rather than asking about each.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from conveyor.orchestrator.artifacts import (
    Artifact,
    copy_hashed,
    hash_stream,
    validate_digest,
    validate_key,
    validate_run_id,
)
from conveyor.orchestrator.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    ChecksumMismatch,
)
from conveyor.orchestrator.settings import Settings

MIB = 1024 * 1024
#: The run's source archive, beside its artifacts: no key names it (keys start with a
#: letter or digit), so it is never listed, and ``delete_run`` takes it too.
SOURCE = ".source.tar.gz"
#: A run's workspace contents and manifests, by SHA-256 (``WorkspaceBlobs``).
BLOBS = ".blobs"
PACKS = ".packs"
MANIFESTS = ".manifests"
#: Past this many digests asked about, the run's blobs are listed instead (1,000 a page).
LIST_PAST = 16

MISSING = ("404", "NoSuchKey", "NotFound")
#: Seconds to connect, and to wait for each read, before a request counts as failed; a
#: request is tried 3 times in all. boto3's own 60 s and 5 tries would hold an API
#: request (or a step) for minutes on an endpoint that accepts and never answers.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
ATTEMPTS = 3
#: Multipart in 8 MiB parts, two at a time: memory stays bounded whatever the file size.
TRANSFER = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=2
)


class S3ArtifactStore:
    """The ArtifactStore of the distributed shape: every worker sees the same files."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        if not settings.s3_bucket:
            raise ArtifactError("the s3 artifact store needs CONVEYOR_S3_BUCKET")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix.strip("/")
        self.client = client or new_client(settings)

    def put(self, run_id: str, key: str, src: Path, kind: str = "file") -> Artifact:
        """Upload ``src`` (streamed, multipart when large) with its checksum."""
        name = self._name(run_id, key)
        with _errors(key):
            with open(src, "rb") as source:
                checksum, size = hash_stream(source)
            # By file name, so parts are read from disk as they go (upload_fileobj would
            # read ahead into memory).
            metadata = {"sha256": checksum, "kind": kind}
            self.client.upload_file(
                str(src), self.bucket, name, ExtraArgs={"Metadata": metadata}, Config=TRANSFER
            )
        return Artifact(key, size, checksum, datetime.now(UTC), kind)

    def get(self, run_id: str, key: str, dest: Path) -> Artifact:
        """Download to ``dest``, checking the SHA-256 as it streams."""
        artifact, body = self.open(run_id, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _errors(key), body, open(dest, "wb") as out:
            checksum, _ = copy_hashed(body, out)
        if checksum != artifact.checksum:
            dest.unlink(missing_ok=True)
            raise ChecksumMismatch(f"artifact {key} of run {run_id} is corrupt (checksum mismatch)")
        return artifact

    def open(self, run_id: str, key: str) -> tuple[Artifact, BinaryIO]:
        """The artifact and a stream of its content."""
        with _errors(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(run_id, key))
        return _artifact(key, answer), cast(BinaryIO, answer["Body"])

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of a run, by key."""
        base = f"{self.prefix}/{validate_run_id(run_id)}/"
        found = []
        with _errors(run_id):
            for name in self._names(base):
                if name[len(base) :].startswith("."):  # the source archive: no artifact
                    continue
                head = self.client.head_object(Bucket=self.bucket, Key=name)
                with suppress(ArtifactError):  # an object Conveyor did not store
                    found.append(_artifact(name[len(base) :], head))
        return sorted(found, key=lambda a: a.key)

    # -- the run's source archive: ``<run_id>/.source.tar.gz``, out of every key's reach

    def put_source(self, run_id: str, src: Path) -> Artifact:
        """Store the run's source archive (see ``RunSources``)."""
        name = self._source(run_id)
        with _errors("the source archive"):
            with open(src, "rb") as source:
                checksum, size = hash_stream(source)
            metadata = {"sha256": checksum, "kind": "source"}
            self.client.upload_file(
                str(src), self.bucket, name, ExtraArgs={"Metadata": metadata}, Config=TRANSFER
            )
        return Artifact(SOURCE, size, checksum, datetime.now(UTC), "source")

    def open_source(self, run_id: str) -> tuple[Artifact, BinaryIO]:
        """The run's source archive and a stream of it."""
        with _errors(f"the source archive of run {run_id}"):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._source(run_id))
        return _artifact(SOURCE, answer), cast(BinaryIO, answer["Body"])

    def delete_source(self, run_id: str) -> None:
        """Remove the run's source archive, if it has one."""
        with _errors(f"the source archive of run {run_id}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._source(run_id))

    # -- a run's workspace between hosts: blobs and manifests by SHA-256 (WorkspaceBlobs)

    def missing_blobs(self, run_id: str, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` not stored for the run."""
        wanted = {validate_digest(d) for d in digests}
        base = f"{self.prefix}/{validate_run_id(run_id)}/{BLOBS}/"
        with _errors(f"the workspace blobs of run {run_id}"):
            if len(wanted) > LIST_PAST:
                return wanted - {name[len(base) :] for name in self._names(base)}
            missing = set()
            for digest in wanted:
                try:
                    self.client.head_object(Bucket=self.bucket, Key=base + digest)
                except ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code", "")) not in MISSING:
                        raise
                    missing.add(digest)
            return missing

    def put_blob(self, run_id: str, digest: str, src: Path) -> None:
        """Upload ``src`` as the blob ``digest`` (small ones checked by S3 against it)."""
        name = self._blob(run_id, digest)
        with _errors(f"blob {digest}"):
            size = src.stat().st_size
            if size < TRANSFER.multipart_threshold:
                data = src.read_bytes()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ChecksumMismatch(f"blob {digest} changed while it was stored")
                self._put_checked(name, data, digest, "blob")
            else:  # streamed in parts; the reader checks the whole against the digest
                self.client.upload_file(
                    str(src),
                    self.bucket,
                    name,
                    ExtraArgs={"Metadata": {"sha256": digest, "kind": "blob"}},
                    Config=TRANSFER,
                )

    def open_blob(self, run_id: str, digest: str) -> BinaryIO:
        """A stream of the blob ``digest``."""
        with _errors(f"blob {digest} of run {run_id}"):
            answer = self.client.get_object(Bucket=self.bucket, Key=self._blob(run_id, digest))
        return cast(BinaryIO, answer["Body"])

    def put_pack(self, run_id: str, data: bytes) -> str:
        """Upload ``data`` as the pack named by its SHA-256 (checked by S3 against it)."""
        digest = hashlib.sha256(data).hexdigest()
        name = self._workspace_object(run_id, PACKS, digest)
        with _errors(f"pack {digest}"):
            self._put_checked(name, data, digest, "pack")
        return digest

    def read_pack(self, run_id: str, digest: str, start: int, length: int) -> bytes:
        """``length`` bytes of the pack ``digest`` from ``start``: one ranged GET."""
        name = self._workspace_object(run_id, PACKS, digest)
        if length <= 0:
            return b""
        with _errors(f"pack {digest} of run {run_id}"):
            try:
                answer = self.client.get_object(
                    Bucket=self.bucket, Key=name, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as exc:  # starts past its end: nothing there
                if str(exc.response.get("Error", {}).get("Code", "")) != "InvalidRange":
                    raise
                return b""
            with answer["Body"] as body:
                data: bytes = body.read(length)
        return data

    def put_manifest(self, run_id: str, digest: str, data: bytes) -> None:
        """Store a workspace manifest under its digest."""
        if hashlib.sha256(data).hexdigest() != validate_digest(digest):
            raise ChecksumMismatch(f"manifest {digest} does not match its digest")
        name = self._workspace_object(run_id, MANIFESTS, digest)
        with _errors(f"manifest {digest}"):
            self._put_checked(name, data, digest, "manifest")

    def get_manifest(self, run_id: str, digest: str) -> bytes:
        """The workspace manifest ``digest``."""
        name = self._workspace_object(run_id, MANIFESTS, digest)
        with _errors(f"workspace manifest {digest} of run {run_id}"):
            answer = self.client.get_object(Bucket=self.bucket, Key=name)
            with answer["Body"] as body:
                data: bytes = body.read()
        return data

    def _blob(self, run_id: str, digest: str) -> str:
        return self._workspace_object(run_id, BLOBS, digest)

    def _workspace_object(self, run_id: str, folder: str, digest: str) -> str:
        """The name of a workspace blob, pack or manifest of the run."""
        return f"{self.prefix}/{validate_run_id(run_id)}/{folder}/{validate_digest(digest)}"

    def _put_checked(self, name: str, data: bytes, digest: str, kind: str) -> None:
        """One PUT of ``data``, which S3 refuses unless its SHA-256 is ``digest``."""
        self.client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=data,
            Metadata={"sha256": digest, "kind": kind},
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        )

    def _source(self, run_id: str) -> str:
        return f"{self.prefix}/{validate_run_id(run_id)}/{SOURCE}"

    def delete(self, run_id: str, key: str) -> None:
        """Remove one artifact."""
        name = self._name(run_id, key)
        with _errors(key):
            self.client.head_object(Bucket=self.bucket, Key=name)
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def delete_workspace(self, run_id: str) -> int:
        """Remove the run's workspace blobs, packs and manifests; how many objects went."""
        base = f"{self.prefix}/{validate_run_id(run_id)}/"
        names: list[str] = []
        with _errors(run_id):
            for folder in (BLOBS, PACKS, MANIFESTS):
                names += self._names(f"{base}{folder}/")
            self._delete_all(names)
        return len(names)

    def delete_run(self, run_id: str) -> int:
        """Remove every artifact of a run."""
        base = f"{self.prefix}/{validate_run_id(run_id)}/"
        with _errors(run_id):
            names = list(self._names(base))
            self._delete_all(names)
        return len([n for n in names if not n[len(base) :].startswith(".")])

    def _delete_all(self, names: Sequence[str]) -> None:
        """Delete these objects, 1,000 a request (S3's most)."""
        for start in range(0, len(names), 1000):
            batch: list[Any] = [{"Key": n} for n in names[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def _names(self, base: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _name(self, run_id: str, key: str) -> str:
        return f"{self.prefix}/{validate_run_id(run_id)}/{validate_key(key)}"


def new_client(settings: Settings) -> Any:
    """A boto3 S3 client for the operator's endpoint, with bounded waits."""
    bounded = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
    )
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=bounded
    )


def _artifact(key: str, answer: Mapping[str, Any]) -> Artifact:
    metadata = answer.get("Metadata", {})
    checksum = metadata.get("sha256")
    if not checksum:
        raise ArtifactError(f"object {key} has no sha256 metadata: it was not stored by Conveyor")
    modified = answer.get("LastModified") or datetime.now(UTC)
    return Artifact(
        key, int(answer["ContentLength"]), checksum, modified, metadata.get("kind", "file")
    )


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """S3 and network errors as Conveyor's, with the reason in one line."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in MISSING:
            raise ArtifactNotFound(f"no artifact {what}") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if status >= 500:  # SlowDown, InternalError, ServiceUnavailable: S3's outage
            raise ArtifactStoreUnavailable(f"S3 answered {status} {code} for {what}") from None
        raise ArtifactError(f"S3 refused {what}: {code} {exc}") from None
    except BotoCoreError as exc:  # no answer: the endpoint is down or unreachable
        raise ArtifactStoreUnavailable(f"S3 request for {what} failed: {exc}") from None
    except OSError as exc:  # the local side: the file to upload, the place to write
        raise ArtifactError(f"could not read or write {what}: {exc.strerror or exc}") from None
