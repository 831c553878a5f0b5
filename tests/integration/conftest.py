"""Fixtures for integration tests against the real Asterisk 22 of the harness.

`asterisk` is session-scoped and shared by every test that asks for it (one instance per
pytest process; the name carries the pid so parallel runs on one machine never collide).
Tests that change its config use `asterisk_reset` to start from the harness's own files.
Tests that stop or freeze Asterisk use `private_asterisk`, their own instance.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.harness import asterisk as ah
from tests.harness.asterisk import AsteriskInstance
from tests.support.tls import make_ca_and_certs
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.bitrix.transport import PortalHttp
from thoth_pbx.core.settings import AmiTarget
from thoth_pbx.sandbox.bitrix import BitrixSimulator
from thoth_pbx.store import db


def in_asterisk(inst: AsteriskInstance, host_path: Path) -> str:
    """The path Asterisk (inside the harness chroot) sees for a file under its config dir."""
    if not inst.managed:
        return str(host_path)
    return "/" + str(host_path.relative_to(ah.sandbox.root_dir()))


def _start(prefix: str) -> AsteriskInstance:
    return ah.acquire(f"{prefix}-{os.getpid()}")


def _finish(inst: AsteriskInstance) -> None:
    ah.release(inst)
    if inst.managed:
        ah.sandbox.remove(inst.name)


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskInstance]:
    """A running Asterisk 22 (harness chroot, or the external one from THOTH_TEST_*)."""
    inst = _start("it")
    yield inst
    _finish(inst)


@pytest.fixture
def private_asterisk() -> Iterator[AsteriskInstance]:
    """An Asterisk of this test's own, free to be stopped, frozen or restarted."""
    inst = ah.start_instance(f"priv-{os.getpid()}")
    yield inst
    _finish(inst)


@dataclass(frozen=True)
class TlsFiles:
    cert: str  # paths as Asterisk sees them
    key: str
    ca: str


def tls_files(inst: AsteriskInstance) -> TlsFiles:
    assert inst.config_dir is not None
    files = make_ca_and_certs(inst.config_dir / "thoth-test-tls", {"pbx": ["pbx.example.com", "127.0.0.1"]})["pbx"]
    return TlsFiles(in_asterisk(inst, files.cert), in_asterisk(inst, files.key), in_asterisk(inst, files.ca))


@pytest.fixture(scope="session")
def asterisk_tls(asterisk: AsteriskInstance) -> TlsFiles:
    return tls_files(asterisk)


@pytest.fixture(scope="session")
def _pristine_config(asterisk: AsteriskInstance) -> dict[str, bytes]:
    assert asterisk.config_dir is not None, "set THOTH_TEST_ASTERISK_CONFIG_DIR for an external Asterisk"
    return {p.name: p.read_bytes() for p in asterisk.config_dir.iterdir() if p.is_file()}


@pytest.fixture
async def asterisk_reset(
    asterisk: AsteriskInstance, _pristine_config: dict[str, bytes]
) -> AsyncIterator[AsteriskInstance]:
    """The shared Asterisk with its config dir as the harness wrote it, reloaded."""
    config_dir = asterisk.config_dir
    assert config_dir is not None
    for path in config_dir.iterdir():
        if path.is_file() and path.name not in _pristine_config:
            path.unlink()
    for name, data in _pristine_config.items():
        if (config_dir / name).read_bytes() != data:
            (config_dir / name).write_bytes(data)
    asterisk.cli("module reload res_pjsip.so")
    asterisk.cli("module reload pbx_config")
    yield asterisk


def ami_client(inst: AsteriskInstance, **kwargs: float) -> AmiClient:
    return AmiClient(AmiTarget(inst.host, inst.ami_port, inst.ami_user, inst.ami_secret), **kwargs)


@pytest.fixture
async def ami(asterisk: AsteriskInstance) -> AsyncIterator[AmiClient]:
    """Our AmiClient, logged in to the shared Asterisk."""
    client = ami_client(asterisk)
    client.start()
    await client.wait_connected(15)
    yield client
    await client.stop()


@pytest.fixture
def override_dir(tmp_path: Path) -> Path:
    path = tmp_path / "overrides"
    path.mkdir()
    return path


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a migrated database (SQLite and PostgreSQL: `database_url`)."""
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def sim() -> AsyncIterator[BitrixSimulator]:
    """The strict Bitrix24 simulator on loopback (operating-time window of 1 s)."""
    simulator = BitrixSimulator(operating_window_s=1.0)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[PortalHttp]:
    """The portal connection pool of our Bitrix24 client."""
    client = PortalHttp()
    yield client
    await client.aclose()
