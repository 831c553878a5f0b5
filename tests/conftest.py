"""Shared fixtures: secret box, SQLite and PostgreSQL databases, a running service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.support.postgres import PostgresServer, start_postgres
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.core.settings import Settings, load_settings
from thoth_pbx.store.types import install_secret_box

TEST_KEY = Fernet.generate_key()

# No test may fail for being slow on a busy machine: performance lives in bench/.
hypothesis_settings.register_profile("thoth", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("thoth")


@pytest.fixture(autouse=True)
def secret_box() -> SecretBox:
    box = SecretBox(TEST_KEY)
    install_secret_box(box)
    return box


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+thoth:///{tmp_path / 'thoth.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name, url = server.create_database()
    yield url.replace("postgresql://", "postgresql+asyncpg://", 1)
    server.drop_database(name)


def make_settings(tmp_path: Path, database_url: str | None = None, **env: str) -> Settings:
    base = {
        "THOTH_DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'thoth.sqlite3'}",
        "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "THOTH_ADMIN_PASSWORD": "correct-horse-battery",
        "THOTH_ADMIN_PASSWORD_FILE": str(tmp_path / "admin-password"),
        "THOTH_ASTERISK_CONFIG_DIR": str(tmp_path / "asterisk"),
        "THOTH_MEDIA_DIR": str(tmp_path / "media"),
        "THOTH_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "THOTH_PUBLIC_URL": "https://thoth.example.com",
        # never the real Graph API: a test that needs Meta passes its simulator; anything else
        # that reaches for Graph (an account's template sync) is refused at once, on any network
        "THOTH_META_GRAPH_URL": "http://127.0.0.1:9",
    }
    base.update(env)
    return load_settings(None, environ=base)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
async def service(settings: Settings, aiohttp_client):  # type: ignore[no-untyped-def]
    """The real aiohttp app with real storage, reached over HTTP by aiohttp's test client."""
    from thoth_pbx.app import build_app, open_services

    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    client.services = services
    client.admin_auth = ("admin", "correct-horse-battery")
    yield client


class LogCapture(logging.Handler):
    """Collects formatted JSON log lines exactly as the service would write them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from thoth_pbx.core.logs import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def json_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
