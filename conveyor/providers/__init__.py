"""Adapters to the outside world, behind the orchestrator's Protocols: one folder per backend.

- ``docker/``: the Docker sandbox and the ``docker`` image engine
- ``local/``: the local sandbox and the local artifact store
- ``s3/``: the S3 artifact store and the ``s3`` object source
- ``http/``: the ``http`` provider, URL downloads
- ``scanners/``: one provider per security scanner (``scanner.<name>``)
- ``sandbox_common``: what the local and the Docker sandbox share

Each backend is loaded through its entry points (``conveyor.sandboxes``,
``conveyor.artifact_stores``, ``conveyor.providers``), so importing this package pulls
in no SDK.
"""
