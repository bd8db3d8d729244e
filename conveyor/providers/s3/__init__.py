"""The S3 backend: S3 or anything that speaks its API (MinIO, DigitalOcean Spaces, R2).

- ``artifacts``: the distributed shape's artifact store (``conveyor.artifact_stores``)
- ``objects``: objects of any bucket, for ``step.artifact_pull`` (``ctx.provider("s3")``)
"""

from .artifacts import S3ArtifactStore
from .objects import S3Objects

__all__ = ["S3ArtifactStore", "S3Objects"]
