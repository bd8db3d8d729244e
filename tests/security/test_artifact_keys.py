"""Artifact keys chosen to reach another artifact's metadata (``X.meta.json`` and the
like): each artifact keeps its own size and checksum whatever else is stored, on local
disk and on S3 (a moto server of this module's own on 127.0.0.1). Local stores written
in the old layout (a ``<key>.meta.json`` sidecar) are still read, and no key can take
their metadata over either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.orchestrator.contracts import ArtifactStore
from conveyor.orchestrator.errors import ArtifactError, ArtifactNotFound
from conveyor.orchestrator.settings import Settings
from conveyor.providers.local.artifacts import LocalArtifactStore

RUN = "3f0c2a1e-1111-4222-8333-944455556666"
BUCKET = "conveyor-artifacts"
REAL = b"the real release tarball"
FORGED = json.dumps(
    {"size": 3, "checksum": "0" * 64, "created_at": "2020-01-01T00:00:00+00:00", "kind": "dir"}
).encode()

#: Names that some layout or other could use for metadata or temporary files.
HOSTILE_KEYS = [
    "app.tar.meta.json",
    "app.tar.meta.json.meta.json",
    "app.tar.meta.json.tmp",
    "app.tar.json",
    "app.tar.sha256",
    "app.tar.tmp",
    "meta/app.tar",
    "meta/app.tar.json",
    "meta.json",
]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from tests.integration.s3_kit import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[ArtifactStore]:
    """Each store in turn: local disk, then S3."""
    if request.param == "local":
        yield LocalArtifactStore(settings)
        return
    from conveyor.providers.s3 import S3ArtifactStore
    from tests.integration.s3_kit import client, empty

    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    update = {"s3_bucket": BUCKET, "s3_endpoint_url": endpoint}
    yield S3ArtifactStore(settings.model_copy(update=update), client=s3)
    empty(s3, BUCKET)


def put(store: ArtifactStore, tmp_path: Path, key: str, data: bytes) -> None:
    src = tmp_path / "upload"
    src.write_bytes(data)
    store.put(RUN, key, src)


def facts(store: ArtifactStore) -> dict[str, tuple[int, str, str]]:
    return {a.key: (a.size, a.checksum, a.kind) for a in store.list(RUN)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_key_named_like_metadata_does_not_forge_the_checksum(
    store: ArtifactStore, tmp_path: Path
) -> None:
    """Given an artifact, when a step stores forged metadata under ``<key>.meta.json``."""
    put(store, tmp_path, "app.tar", REAL)
    put(store, tmp_path, "app.tar.meta.json", FORGED)

    # Then the artifact still has its own size and checksum, everywhere it is served
    assert facts(store)["app.tar"] == (len(REAL), sha(REAL), "file")
    artifact, stream = store.open(RUN, "app.tar")
    with stream:
        assert (artifact.size, artifact.checksum) == (len(REAL), sha(REAL))
        assert stream.read() == REAL
    store.get(RUN, "app.tar", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == REAL
    # And the hostile key is an artifact of its own, nothing more
    assert facts(store)["app.tar.meta.json"] == (len(FORGED), sha(FORGED), "file")


def test_hostile_keys_are_artifacts_of_their_own(store: ArtifactStore, tmp_path: Path) -> None:
    contents = {key: f"content of {key}".encode() for key in ["app.tar", *HOSTILE_KEYS]}
    for key, data in contents.items():
        put(store, tmp_path, key, data)
    put(store, tmp_path, "app.tar", REAL)  # stored again after all of them
    contents["app.tar"] = REAL

    assert facts(store) == {key: (len(d), sha(d), "file") for key, d in contents.items()}
    for key, data in contents.items():
        store.get(RUN, key, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data


def test_deleting_a_key_named_like_metadata_leaves_the_artifact(
    store: ArtifactStore, tmp_path: Path
) -> None:
    put(store, tmp_path, "app.tar", REAL)
    put(store, tmp_path, "app.tar.meta.json", FORGED)

    store.delete(RUN, "app.tar.meta.json")

    assert facts(store) == {"app.tar": (len(REAL), sha(REAL), "file")}


@pytest.mark.parametrize("key", [".meta/app.tar", "a/.meta/app.tar", ".app.tar", "a/.x"])
def test_keys_cannot_name_hidden_places(store: ArtifactStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(ArtifactError):
        put(store, tmp_path, key, FORGED)


def test_a_key_below_a_local_artifact_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    """On disk ``a`` and ``a/b`` cannot both be files: the second is refused, nothing changes."""
    store = LocalArtifactStore(settings)
    put(store, tmp_path, "app.tar", REAL)

    with pytest.raises(ArtifactError, match=r"^could not store app.tar/x: "):
        put(store, tmp_path, "app.tar/x", FORGED)

    assert facts(store) == {"app.tar": (len(REAL), sha(REAL), "file")}


# -- local stores written before the metadata tree --------------------------------------


def old_layout(settings: Settings, key: str, data: bytes, kind: str = "file") -> Path:
    """An artifact as earlier versions stored it: the file and a ``.meta.json`` beside it."""
    path = settings.data_dir / "artifacts" / RUN / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    meta = {"size": len(data), "checksum": sha(data), "created_at": _now(), "kind": kind}
    path.with_name(path.name + ".meta.json").write_text(json.dumps(meta))
    return path


def _now() -> str:
    return datetime.now(UTC).isoformat()


def test_artifacts_of_the_old_layout_are_still_served(settings: Settings, tmp_path: Path) -> None:
    old_layout(settings, "app.tar", REAL)
    old_layout(settings, "reports/junit.xml", b"<xml/>", kind="file")
    old_layout(settings, "site", b"tar bytes", kind="dir")
    store = LocalArtifactStore(settings)

    assert facts(store) == {
        "app.tar": (len(REAL), sha(REAL), "file"),
        "reports/junit.xml": (6, sha(b"<xml/>"), "file"),
        "site": (9, sha(b"tar bytes"), "dir"),
    }
    store.get(RUN, "reports/junit.xml", tmp_path / "junit.xml")
    assert (tmp_path / "junit.xml").read_bytes() == b"<xml/>"
    store.delete(RUN, "site")
    assert sorted(facts(store)) == ["app.tar", "reports/junit.xml"]


def test_an_old_layout_artifact_cannot_be_forged_through_its_sidecar_name(
    settings: Settings, tmp_path: Path
) -> None:
    """Given an artifact of the old layout never read since the upgrade."""
    old_layout(settings, "app.tar", REAL)
    store = LocalArtifactStore(settings)

    # When a step stores forged metadata at the name of its old sidecar
    put(store, tmp_path, "app.tar.meta.json", FORGED)

    # Then the artifact keeps its own metadata, and the hostile key is a plain artifact
    assert facts(store) == {
        "app.tar": (len(REAL), sha(REAL), "file"),
        "app.tar.meta.json": (len(FORGED), sha(FORGED), "file"),
    }
    store.get(RUN, "app.tar", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == REAL


def test_an_old_layout_sidecar_that_is_itself_an_artifact_is_not_metadata(
    settings: Settings,
) -> None:
    """Given a store where the old version let ``app.tar.meta.json`` overwrite a sidecar."""
    old_layout(settings, "app.tar", REAL)
    old_layout(settings, "app.tar.meta.json", FORGED)  # an artifact, with its own sidecar
    store = LocalArtifactStore(settings)

    # Then the forged file is not taken for app.tar's metadata: app.tar has none left
    assert facts(store) == {"app.tar.meta.json": (len(FORGED), sha(FORGED), "file")}
    with pytest.raises(ArtifactNotFound):
        store.open(RUN, "app.tar")


def test_metadata_is_kept_where_no_key_reaches(settings: Settings, tmp_path: Path) -> None:
    store = LocalArtifactStore(settings)
    put(store, tmp_path, "app.tar", REAL)
    run = settings.data_dir / "artifacts" / RUN

    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())

    assert files == [".meta/app.tar", "app.tar"]
    assert json.loads((run / ".meta" / "app.tar").read_text())["checksum"] == sha(REAL)


def test_unreadable_metadata_is_an_error_that_names_no_server_path(
    settings: Settings, tmp_path: Path
) -> None:
    """The error is an answer's detail: it says what is wrong, never where the files are."""
    store = LocalArtifactStore(settings)
    put(store, tmp_path, "app.tar", REAL)
    meta = settings.data_dir / "artifacts" / RUN / ".meta" / "app.tar"
    meta.unlink()
    meta.symlink_to(meta)  # reading it fails with ELOOP, an OSError naming the file

    with pytest.raises(ArtifactError) as caught:
        store.open(RUN, "app.tar")

    assert "app.tar" in caught.value.message
    assert str(settings.data_dir) not in caught.value.message
