"""Secrets given to a run, sealed at rest so that any worker can use them.

A run's secrets are encrypted (Fernet: AES-128-CBC with an HMAC) with the key of
``CONVEYOR_SECRET_KEY`` and kept beside the run, so a worker on another host can open
them and nothing in the database reads as the secret itself. The embedded shape makes
itself a key file under the data directory the first time it needs one.

A secret shorter than ``MIN_SECRET_LENGTH`` characters (not counting surrounding
whitespace) is refused before anything is stored: logs mask a secret's value, and a
value that short would either go unmasked or turn every log into asterisks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from conveyor.orchestrator.errors import SecretRefused, SecretsUnavailable
from conveyor.orchestrator.pipeline.templatetaint import MIN_SECRET_LENGTH
from conveyor.orchestrator.settings import Settings

KEY_FILE = "secret.key"


class Vault:
    """Seals and opens a run's secrets with one key."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretsUnavailable(
                f"CONVEYOR_SECRET_KEY is not a valid key: {exc} (make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from None

    def seal(self, secrets: Mapping[str, str]) -> str:
        """The secrets as one encrypted token (SecretRefused for one too short to mask)."""
        check_secrets(secrets)
        return self._fernet.encrypt(json.dumps(dict(secrets)).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        """The secrets back; SecretsUnavailable when this key did not seal them."""
        try:
            values: dict[str, str] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise SecretsUnavailable(
                "this run's secrets were sealed with another CONVEYOR_SECRET_KEY"
            ) from None
        return values


def check_secrets(secrets: Mapping[str, str]) -> None:
    """Refuse secrets too short to be masked in logs, naming them (never their values)."""
    short = sorted(
        name for name, value in secrets.items() if len(value.strip()) < MIN_SECRET_LENGTH
    )
    if short:
        names = ", ".join(repr(name) for name in short)
        raise SecretRefused(
            f"secret {names} is shorter than {MIN_SECRET_LENGTH} characters: logs could not "
            "mask it; use a longer value"
        )


def make_vault(settings: Settings, embedded: bool) -> Vault | None:
    """The vault of these settings; in the embedded shape, a key file made on first use."""
    if settings.secret_key:
        return Vault(settings.secret_key)
    if not embedded:
        return None  # no key: runs with secrets are refused (see Runtime.submit)
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        _write_key(path)
    return Vault(path.read_bytes().strip())


def _write_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(Fernet.generate_key())
