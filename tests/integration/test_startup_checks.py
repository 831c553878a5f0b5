"""Start-up refuses what would damage stored data or leak a secret, in one line (issue 10 items 2, 7)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import make_settings
from tests.support.cli import CLI, serve_env
from thoth_pbx.app import build_app, close_services, open_services
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.core.secrets import SecretKeyError
from thoth_pbx.core.settings import SettingsError

WABA = {"name": "Main", "access_token": "EAAG" + "k" * 24, "app_secret": "0123456789abcdef"}


async def _store_an_account(settings, aiohttp_client) -> int:  # type: ignore[no-untyped-def]
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    resp = await client.post("/api/admin/wabas", json=WABA, headers=auth)
    assert resp.status == 201, await resp.text()
    account_id = (await resp.json())["id"]
    await client.close()
    return int(account_id)


async def _account_token(settings, aiohttp_client, account_id: int) -> str:  # type: ignore[no-untyped-def]
    services = await open_services(settings)
    try:
        from thoth_pbx.features.directory.models import WabaAccount

        async with services.sessions() as session:
            account = await session.get(WabaAccount, account_id)
            assert account is not None
            return account.access_token
    finally:
        await close_services(services)


async def test_a_lost_or_replaced_key_stops_start_and_changes_nothing(settings, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    account_id = await _store_an_account(settings, aiohttp_client)
    key_file = settings.secret_key_file
    original = key_file.read_bytes()

    key_file.rename(key_file.with_name("secret.key.bak"))
    with pytest.raises(SecretKeyError) as missing:
        await open_services(settings)
    assert (
        "missing" in str(missing.value) and "restore" in str(missing.value) and "secret_key_file" in str(missing.value)
    )
    assert not key_file.exists()  # no new key was made beside the stored secrets

    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, Fernet.generate_key() + b"\n")
    os.close(fd)
    replaced = key_file.read_bytes()
    with pytest.raises(SecretKeyError) as wrong:
        await open_services(settings)
    assert "does not decrypt" in str(wrong.value) and "restore" in str(wrong.value)
    assert key_file.read_bytes() == replaced

    key_file.write_bytes(original)
    assert await _account_token(settings, aiohttp_client, account_id) == WABA["access_token"]


async def test_a_key_is_made_for_a_database_without_secrets(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    services = await open_services(settings)  # migrated, no secret stored
    await close_services(services)
    settings.secret_key_file.unlink()
    services = await open_services(settings)
    await close_services(services)
    assert settings.secret_key_file.exists()


def _one_line_exit_2(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


async def test_serve_and_db_upgrade_refuse_a_replaced_key_in_one_line(tmp_path: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}")
    await _store_an_account(settings, aiohttp_client)
    settings.secret_key_file.write_bytes(Fernet.generate_key() + b"\n")
    env = serve_env(tmp_path)
    for command in (["serve"], ["db", "upgrade"]):
        line = _one_line_exit_2(subprocess.run([*CLI, *command], capture_output=True, text=True, env=env, timeout=60))
        assert "THOTH_SECRET_KEY_FILE" in line and "restore" in line, line


@pytest.mark.parametrize("content", [b"this is not a database" * 400, b"SQLite format 3\x00" + b"\xff" * 8000])
def test_a_corrupt_database_file_is_one_line_naming_database_url(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "db.sqlite3").write_bytes(content)
    (tmp_path / "db.sqlite3").chmod(0o600)
    env = serve_env(tmp_path)
    line = _one_line_exit_2(subprocess.run([*CLI, "serve"], capture_output=True, text=True, env=env, timeout=60))
    assert "THOTH_DATABASE_URL" in line and "cannot be read" in line, line
    assert (tmp_path / "db.sqlite3").read_bytes() == content


def test_the_generated_password_is_printed_once(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    banners = []
    for _ in range(2):
        proc = subprocess.Popen(
            [*CLI, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
        )
        try:
            lines = [proc.stdout.readline() for _ in range(6)]  # type: ignore[union-attr]
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0
        banners.append("".join(lines))
    password = (tmp_path / "admin-password").read_text().strip()
    assert password in banners[0]
    assert password not in banners[1] and str(tmp_path / "admin-password") in banners[1]


def test_config_check_hides_a_password_given_as_a_query_parameter(tmp_path: Path) -> None:
    url = "postgresql://thoth:user-part-pw@db.example:5432/thoth?password=query-part-pw&sslmode=require"
    out = subprocess.run(
        [*CLI, "config", "check"], capture_output=True, text=True, env=serve_env(tmp_path, THOTH_DATABASE_URL=url)
    )
    assert out.returncode == 0, out.stderr
    assert "user-part-pw" not in out.stdout and "query-part-pw" not in out.stdout
    assert "thoth:***@db.example:5432/thoth?password=***&sslmode=require" in out.stdout


def test_a_rejected_admin_password_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        make_settings(tmp_path, THOTH_ADMIN_PASSWORD="short7!")
    assert "admin_password" in str(err.value) and "short7!" not in str(err.value)
    out = subprocess.run(
        [*CLI, "config", "check"],
        capture_output=True,
        text=True,
        env=serve_env(tmp_path, THOTH_ADMIN_PASSWORD="has space in it"),
    )
    line = _one_line_exit_2(out)
    assert "THOTH_ADMIN_PASSWORD" in line and "has space" not in line


async def test_the_sqlite_file_is_private(tmp_path: Path, json_logs) -> None:  # type: ignore[no-untyped-def]
    fresh = make_settings(tmp_path / "a")
    services = await open_services(fresh)
    await close_services(services)
    path = tmp_path / "a" / "thoth.sqlite3"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    older = tmp_path / "b" / "thoth.sqlite3"
    older.parent.mkdir()
    older.touch(mode=0o644)
    older.chmod(0o644)
    services = await open_services(make_settings(tmp_path / "b"))
    await close_services(services)
    assert oct(older.stat().st_mode & 0o777) == "0o600"
    assert "readable by others" in json_logs.text


def test_a_bad_messaging_table_stops_start_in_one_line(tmp_path: Path) -> None:
    """[messaging] is validated by its feature at start: one line naming the key, exit 2."""
    config = tmp_path / "thoth.toml"
    config.write_text("[messaging]\nmessages_per_s = 0\n")
    env = serve_env(tmp_path, THOTH_CONFIG=str(config))
    done = subprocess.run([*CLI, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "thoth-pbx: setting messaging.messages_per_s: must be at least 1"
