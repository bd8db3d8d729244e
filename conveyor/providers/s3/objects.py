"""The ``s3`` provider: objects fetched from S3 or anything that speaks its API.

Steps reach it as ``ctx.provider("s3")`` (``step.artifact_pull`` with ``source: s3``).
The endpoint and region are the operator's (``CONVEYOR_S3_ENDPOINT_URL``,
``CONVEYOR_S3_REGION``) and so are the credentials (boto3's usual chain: environment,
config files, instance role): a pipeline names a bucket and a key, nothing more.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from conveyor.orchestrator.artifacts import Artifact, copy_hashed
from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound
from conveyor.orchestrator.settings import Settings

from .artifacts import new_client

NO_BUCKET = ("NoSuchBucket",)
NO_OBJECT = ("NoSuchKey", "404", "NotFound")
DENIED = ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch")


class S3Objects:
    """Reads objects out of buckets with the operator's S3 settings."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (a process that never pulls needs none)."""
        if self._client is None:
            self._client = new_client(self.settings)
        return self._client

    def fetch(self, bucket: str, key: str, dest: Path, *, limit: int) -> Artifact:
        """Stream ``s3://bucket/key`` to ``dest`` through a temporary file beside it."""
        where = f"s3://{bucket}/{key}"
        with _errors(where):
            answer = self.client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"]
        size = int(answer.get("ContentLength") or 0)
        if size > limit:
            body.close()
            raise ArtifactError(f"{where} is {size} bytes; the limit is {limit}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=dest.parent, prefix=".s3-")
        try:
            with _errors(where), body, os.fdopen(handle, "wb") as out:
                checksum, size = copy_hashed(body, out, limit=limit)
            os.replace(name, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        modified = answer.get("LastModified") or datetime.now(UTC)
        return Artifact(key, size, checksum, modified)


@contextmanager
def _errors(where: str) -> Iterator[None]:
    """S3, network and disk errors as one line that says what to fix."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), _one_line(error.get("Message") or exc)
        if code in NO_BUCKET:
            raise ArtifactNotFound(f"{where}: no such bucket") from None
        if code in NO_OBJECT:
            raise ArtifactNotFound(f"{where}: no such object") from None
        if code in DENIED:
            raise ArtifactError(f"{where}: access denied ({code}: {message})") from None
        raise ArtifactError(f"{where}: S3 answered {code}: {message}") from None
    except ArtifactError as exc:  # over the size limit while streaming
        raise ArtifactError(f"{where} is {exc.message}") from None
    except (BotoCoreError, HTTPError) as exc:
        raise ArtifactError(f"{where}: {_one_line(exc)}") from None
    except OSError as exc:
        raise ArtifactError(f"{where}: {exc.strerror or _one_line(exc)}") from None


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
