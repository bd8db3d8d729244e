"""Run secrets sealed at rest: any process with the key opens them, the database never reads as them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conveyor.orchestrator.engine.runtime import Runtime
from conveyor.orchestrator.engine.vault import Vault, make_vault
from conveyor.orchestrator.errors import SecretsUnavailable
from conveyor.orchestrator.pipeline.templates import TemplateEngine
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.testing import MemoryDispatcher
from tests.unit.runtime_kit import (
    Noop,
    pipeline,
    sqlite_only_store,  # noqa: F401  (the fixture store, on SQLite: a test reads its file)
)

SECRET = "hunter2-very-secret"


def test_sealed_secrets_open_only_with_their_key() -> None:
    key = Fernet.generate_key()
    sealed = Vault(key).seal({"TOKEN": SECRET})

    assert SECRET not in sealed
    assert Vault(key).open(sealed) == {"TOKEN": SECRET}
    with pytest.raises(SecretsUnavailable, match="another CONVEYOR_SECRET_KEY"):
        Vault(Fernet.generate_key()).open(sealed)
    with pytest.raises(SecretsUnavailable, match="not a valid key"):
        Vault("not-a-key")


def test_the_embedded_shape_makes_itself_a_private_key_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)

    first = make_vault(settings, embedded=True)
    again = make_vault(settings, embedded=True)

    assert first is not None and again is not None
    assert again.open(first.seal({"A": "bee"})) == {"A": "bee"}
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600
    assert make_vault(settings, embedded=False) is None
    assert make_vault(
        settings.model_copy(update={"secret_key": Fernet.generate_key().decode()}), embedded=False
    )


def runtime(store: SqlStore, vault: Vault | None) -> Runtime:
    return Runtime(store, TemplateEngine(), MemoryDispatcher(), vault=vault)


def test_another_process_with_the_key_sees_a_runs_secrets(
    store: SqlStore, settings: Settings
) -> None:
    from conveyor.orchestrator.pipeline.plan import Compiler

    vault = Vault(Fernet.generate_key())
    compiled = Compiler({"noop": Noop()}, TemplateEngine()).compile(
        pipeline("{name: a, type: noop}")
    )
    run = runtime(store, vault).submit(
        compiled.select(None), compiled.source, {}, secrets={"TOKEN": SECRET}
    )

    elsewhere = runtime(store, vault)  # a worker on another host: nothing in memory
    assert elsewhere.secrets(run.id) == {"TOKEN": SECRET}
    assert SECRET.encode() not in Path(settings.data_dir / "conveyor.db").read_bytes()
    with pytest.raises(SecretsUnavailable, match="CONVEYOR_SECRET_KEY is not set"):
        runtime(store, None).secrets(run.id)


def test_secrets_without_a_key_are_refused_before_anything_is_written(store: SqlStore) -> None:
    from conveyor.orchestrator.pipeline.plan import Compiler

    compiled = Compiler({"noop": Noop()}, TemplateEngine()).compile(
        pipeline("{name: a, type: noop}")
    )
    with pytest.raises(SecretsUnavailable, match="need CONVEYOR_SECRET_KEY"):
        runtime(store, None).submit(
            compiled.select(None), compiled.source, {}, secrets={"T": SECRET}
        )
    assert store.list_runs() == []
