"""A private PostgreSQL server for the test run (Debian's packaged binaries, loopback only).

Set THOTH_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db to use an existing server
instead; each test still gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


@dataclass
class PostgresServer:
    admin_url: str  # postgresql://... to the maintenance database
    _proc_dir: Path | None = None

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    def create_database(self) -> tuple[str, str]:
        name = f"thoth_test_{uuid.uuid4().hex[:12]}"
        _psql(self.admin_url, f'CREATE DATABASE "{name}"')
        return name, self.url_for(name)

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser on the maintenance database."""
        _psql(self.admin_url, statement)

    def drop_database(self, name: str) -> None:
        _psql(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._proc_dir is not None:
            _as_postgres([_bin("pg_ctl"), "-D", str(self._proc_dir / "data"), "-m", "fast", "-w", "stop"])
            shutil.rmtree(self._proc_dir, ignore_errors=True)


def _psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True)


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL {name} not found: run `make test` (it installs postgresql)")
    return found[-1]


def _as_postgres(cmd: list[str]) -> None:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres() -> PostgresServer:
    external = os.environ.get("THOTH_TEST_POSTGRES_URL")
    if external:
        return PostgresServer(external)
    base = Path(tempfile.mkdtemp(prefix="thoth-pg-"))
    data = base / "data"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    _as_postgres([_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
    _as_postgres(
        [
            _bin("pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(base / "log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off",
            "start",
        ]
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _psql(url, "SELECT 1")  # pg_ctl -w returned only once the server accepts connections
    return PostgresServer(url, base)
