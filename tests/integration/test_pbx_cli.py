"""`thoth-pbx pbx ...` as an admin runs it: a TOML file with [trunk], the real Asterisk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import TlsFiles
from tests.integration.test_pbx_apply import cli_fields, free_port


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOTH_")}
    return subprocess.run(
        [sys.executable, "-m", "thoth_pbx.cli", "--config", str(config), "pbx", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def write_config(tmp_path: Path, inst: AsteriskInstance, trunk: str) -> Path:
    config = tmp_path / "thoth.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite3"}"\n'
        f'secret_key_file = "{tmp_path / "secret.key"}"\n'
        f'admin_password = "correct-horse-battery"\n'
        f'ami_url = "tcp://{inst.ami_user}:{inst.ami_secret}@{inst.host}:{inst.ami_port}"\n'
        f'asterisk_config_dir = "{inst.config_dir}"\n'
        f"\n[trunk]\n{trunk}"
    )
    return config


def test_cli_render_apply_status(asterisk_reset: AsteriskInstance, asterisk_tls: TlsFiles, tmp_path: Path) -> None:
    trunk = (
        f'bind_address = "127.0.0.1"\nbind_port = {free_port()}\ntransport_name = "cli-{free_port()}"\n'
        f'cert_file = "{asterisk_tls.cert}"\npriv_key_file = "{asterisk_tls.key}"\n'
        f'identify_match = ["127.0.0.2"]\nlanguage = "es"\ntimers = ""\n'
    )
    config = write_config(tmp_path, asterisk_reset, trunk)

    rendered = run(config, "render", "--file", "pjsip_thoth.conf")
    assert rendered.returncode == 0, rendered.stderr
    assert "language=es\n" in rendered.stdout and "timers=" not in rendered.stdout
    assert "fallback_dial is not set" in rendered.stderr

    applied = run(config, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    outcome = json.loads(applied.stdout)
    assert outcome["result"] == "applied" and outcome["revision"] == 1
    assert "+language=es" in applied.stderr  # the diff
    assert cli_fields(asterisk_reset.cli("pjsip show endpoint wa.meta.vc"))["language"] == "es"

    again = run(config, "apply")
    assert again.returncode == 0 and json.loads(again.stdout)["result"] == "unchanged"

    status = run(config, "status")
    report = json.loads(status.stdout)
    assert report["ami"]["state"] == "connected" and report["drift"] is False
    assert report["last_revision"]["result"] == "unchanged" and report["endpoints"]["wa.meta.vc"]["loaded"]


def test_cli_bad_trunk_settings_name_the_key(asterisk: AsteriskInstance, tmp_path: Path) -> None:
    bad = run(write_config(tmp_path, asterisk, "bind_port = 99999\n"), "render")
    assert bad.returncode == 2 and "trunk.bind_port" in bad.stderr and "[trunk]" in bad.stderr
    missing = run(write_config(tmp_path, asterisk, 'language = "en"\n'), "apply")
    assert missing.returncode == 2 and "cert_file" in missing.stderr
