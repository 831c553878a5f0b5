"""Secret handling shared by every layer: the key file, encryption at rest, masking.

Encryption uses Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`). Lookups of a
secret by value (webhook api-key, verify-token uniqueness) go through `fingerprint`, an
HMAC keyed with a key derived from the same file, so no plain value is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _stdlib_secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from thoth_pbx.core.settings import SettingsError


class SecretKeyError(SettingsError):
    pass


def load_or_create_key(path: Path) -> bytes:
    """Read the Fernet key; create it (mode 0600) on first run. Refuse a readable-by-others file."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SecretKeyError("secret_key_file", f"{path} is readable by others (mode {mode:04o}); run chmod 600 {path}")
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise SecretKeyError("secret_key_file", f"{path} does not hold a valid Fernet key") from None
    return key


def open_key(path: Path, stored_sample: str | None) -> bytes:
    """The key for a database that holds `stored_sample` (one encrypted value, or None when it
    holds no secret yet). A key is generated only for such an empty database: a missing or
    replaced key file next to stored secrets would make them unreadable and mix two keys in one
    database, so the service refuses to start and says how to recover."""
    path = Path(path)
    if stored_sample is not None and not path.exists():
        raise SecretKeyError(
            "secret_key_file",
            f"{path} is missing, but the database holds secrets encrypted with a key: restore that key file "
            "from your backup (a new key could not read them); nothing was changed",
        )
    key = load_or_create_key(path)
    if stored_sample is not None:
        try:
            Fernet(key).decrypt(stored_sample.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretKeyError(
                "secret_key_file",
                f"{path} does not decrypt the secrets stored in the database (it is not the key they were "
                "encrypted with): restore the key file that was in use from your backup; nothing was changed",
            ) from None
    return key


class SecretBox:
    """Encrypts and decrypts secret fields; one instance per process, built from the key file."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key
        self._lookup_key = self.derive("lookup")

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise SecretKeyError(
                "secret_key_file", "a stored secret cannot be decrypted: the key file does not match the database"
            ) from None

    def derive(self, purpose: str) -> bytes:
        """A key of its own for one purpose (lookups, signed links), bound to the key file."""
        return hashlib.sha256(b"thoth-pbx " + purpose.encode() + b"\0" + self._key).digest()

    def fingerprint(self, plain: str) -> str:
        return hmac.new(self._lookup_key, plain.encode(), hashlib.sha256).hexdigest()


def generate_token(nbytes: int = 24) -> str:
    """A random URL-safe token (verify tokens, api-keys, generated passwords)."""
    return _stdlib_secrets.token_urlsafe(nbytes)


def mask(value: str | None) -> str | None:
    """Show enough of a secret to recognise it, never enough to use it: `EAAG…9xQ`."""
    if value is None:
        return None
    if len(value) < 12:
        return "…" if len(value) < 6 else "…" + value[-2:]
    return f"{value[:4]}…{value[-3:]}"


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
