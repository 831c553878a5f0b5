from __future__ import annotations

import os
from pathlib import Path

import pytest

from thoth_pbx.core.secrets import SecretBox, SecretKeyError, load_or_create_key, mask


def test_key_file_created_with_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    key = load_or_create_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_or_create_key(path) == key


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        load_or_create_key(path)


def test_garbage_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("not a key")
    os.chmod(path, 0o600)
    with pytest.raises(SecretKeyError, match="secret_key_file"):
        load_or_create_key(path)


def test_encrypt_round_trip_and_fingerprint(tmp_path: Path) -> None:
    box = SecretBox(load_or_create_key(tmp_path / "k"))
    token = box.encrypt("EAAGsecretvalue")
    assert "EAAGsecretvalue" not in token and box.decrypt(token) == "EAAGsecretvalue"
    assert box.fingerprint("a") == box.fingerprint("a") != box.fingerprint("b")
    other = SecretBox(load_or_create_key(tmp_path / "k2"))
    with pytest.raises(SecretKeyError):
        other.decrypt(token)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("EAAGm0PX4ZCpsBAKZBxyz9xQ", "EAAG…9xQ"), ("abcdefgh", "…gh"), ("abc", "…"), (None, None)],
)
def test_mask(value: str | None, shown: str | None) -> None:
    assert mask(value) == shown
