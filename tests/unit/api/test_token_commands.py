"""``conveyor token``: made on the database directly, so the first admin token exists."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from conveyor.cli.main import cli
from conveyor.orchestrator.settings import Settings
from conveyor.orchestrator.store.sql import SqlStore
from conveyor.orchestrator.store.tokens import Role, Tokens


def conveyor(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_a_token_is_created_listed_and_revoked(settings: Settings) -> None:
    code, secret, note = conveyor(
        settings.data_dir, "token", "create", "--role", "admin", "--name", "first"
    )

    assert code == 0 and secret.startswith("cvt_") and "shown once" in note
    store = SqlStore(settings.resolved_database_url)
    try:
        token = Tokens(store).authenticate(secret.strip())
        assert token is not None and (token.name, token.role) == ("first", Role.ADMIN)
        code, listing, _ = conveyor(settings.data_dir, "token", "list")
        assert code == 0 and token.id in listing and "first" in listing
        assert secret.strip() not in listing
        code, said, _ = conveyor(settings.data_dir, "token", "revoke", token.id)
        assert code == 0 and "revoked" in said
        assert Tokens(store).authenticate(secret.strip()) is None
    finally:
        store.close()


def test_a_token_needs_one_of_the_three_roles(settings: Settings) -> None:
    code, _, said = conveyor(settings.data_dir, "token", "create", "--role", "root")

    assert code == 2 and "viewer" in said and "operator" in said and "admin" in said
