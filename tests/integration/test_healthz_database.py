"""/healthz says `ok` only when the database takes a write and the key fits it (issue 10 item 7).

A full or read-only disk is made for real: the SQLite file lives on its own small tmpfs,
filled up or remounted read-only while the service runs (the Asterisk harness already needs
root for its chroot, so the tests do too)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from thoth_pbx.app import build_app, close_services, open_services
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.core.settings import SettingsError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


async def _health(client) -> tuple[int, dict]:  # type: ignore[no-untyped-def, type-arg]
    resp = await client.get("/healthz")
    return resp.status, (await resp.json())


async def test_full_then_freed_disk(small_disk: Path, tmp_path: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    services = await open_services(make_settings(tmp_path, f"sqlite:///{small_disk / 'thoth.sqlite3'}"))
    client = await aiohttp_client(build_app(services))
    assert (await _health(client))[1]["database"] == {"state": "ok"}
    filler = small_disk / "filler"
    with filler.open("wb") as fh:  # until ENOSPC
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    status, body = await _health(client)
    assert status == 503 and body["status"] == "down"
    assert body["database"]["state"] == "full", body
    filler.unlink()
    status, body = await _health(client)
    assert status == 200 and body["database"] == {"state": "ok"}


async def test_a_database_on_a_read_only_disk_stops_start_in_one_line(small_disk: Path, tmp_path: Path) -> None:
    """Linux will not turn a filesystem read-only under a file open for writing (only its own
    error handling does, errors=remount-ro), so the disk goes read-only between two starts;
    at run time the read-only case is shown on PostgreSQL below."""
    settings = make_settings(tmp_path, f"sqlite:///{small_disk / 'thoth.sqlite3'}")
    await close_services(await open_services(settings))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(SettingsError) as err:
        await open_services(settings)
    message = str(err.value)
    assert "THOTH_DATABASE_URL" in message and "read-only" in message and "\n" not in message


async def test_read_only_postgres(tmp_path: Path, postgres_server, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    name, url = postgres_server.create_database()
    services = await open_services(make_settings(tmp_path, url.replace("postgresql://", "postgresql+asyncpg://", 1)))
    client = await aiohttp_client(build_app(services))
    assert (await _health(client))[1]["database"] == {"state": "ok"}
    postgres_server.sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    postgres_server.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    status, body = await _health(client)
    assert status == 503 and body["database"]["state"] == "read-only", body
    postgres_server.sql(f"ALTER DATABASE {name} RESET default_transaction_read_only")
    status, body = await _health(client)
    assert status == 200 and body["database"] == {"state": "ok"}
    await client.close()
    postgres_server.drop_database(name)


async def test_a_second_installation_with_another_key_is_a_key_mismatch(
    tmp_path: Path, database_url: str, aiohttp_client
) -> None:  # type: ignore[no-untyped-def]
    """Two installations pointed at one database with different key files (a copied config, a
    restored backup): the running one must not go on saying ok while it mixes keys."""
    first = await open_services(make_settings(tmp_path / "one", database_url))
    client = await aiohttp_client(build_app(first))
    assert (await _health(client))[1]["database"] == {"state": "ok"}
    second = await open_services(make_settings(tmp_path / "two", database_url))
    other = await aiohttp_client(build_app(second))
    auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    resp = await other.post("/api/admin/wabas", json={"name": "B", "access_token": "EAAG" + "b" * 24}, headers=auth)
    assert resp.status == 201
    status, body = await _health(client)
    assert status == 503 and body["database"]["state"] == "key-mismatch", body
    assert "restore the key file" in body["database"]["error"]
    assert (await _health(other))[1]["database"] == {"state": "ok"}


async def test_a_database_file_damaged_while_running(tmp_path: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    services = await open_services(make_settings(tmp_path))
    client = await aiohttp_client(build_app(services))
    assert (await _health(client))[1]["database"] == {"state": "ok"}
    path = tmp_path / "thoth.sqlite3"
    for damaged in (path, path.with_name(path.name + "-wal")):
        if damaged.exists():  # overwritten in place, as a disk fault or a stray dd would
            with damaged.open("r+b") as fh:
                fh.write(b"\xff" * damaged.stat().st_size)
    status, body = await _health(client)
    assert status == 503 and body["database"]["state"] == "corrupt", body
