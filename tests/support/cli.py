"""Running `thoth-pbx` as a user does: a subprocess with its settings in the environment."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "thoth_pbx.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings for a service on SQLite in `tmp_path`, on a free port (THOTH_LISTEN), with a
    generated admin password (THOTH_ADMIN_PASSWORD removed); `extra` overrides."""
    env = {
        **os.environ,
        "THOTH_LISTEN": f"127.0.0.1:{free_port()}",
        "THOTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "THOTH_ADMIN_PASSWORD_FILE": str(tmp_path / "admin-password"),
    }
    env.pop("THOTH_ADMIN_PASSWORD", None)
    env.update(extra)
    return env
