"""`thoth-pbx doctor` as a user runs it: a subprocess, human output or `--json`, the exit code.

Exit codes (docs/doctor.md): 0 all checks that could be made are ok, 3 warnings only, 1 a
failure, 2 bad settings; `cannot_check` never changes it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cli import CLI, serve_env


def test_nothing_configured_fails_and_says_what_to_set(tmp_path: Path) -> None:
    env = serve_env(tmp_path, THOTH_ASTERISK_CONFIG_DIR=str(tmp_path / "asterisk"))
    out = subprocess.run([*CLI, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and out.stdout.startswith("{"), out.stderr
    report = json.loads(out.stdout)
    by_check = {c["check"]: c for c in report["checks"]}
    assert by_check["ami.connection"]["status"] == "fail" and "ami_url" in by_check["ami.connection"]["fix"]
    assert by_check["ari.permissions"]["status"] == "fail"
    assert by_check["meta.calling"]["status"] == "fail"
    assert by_check["bitrix.scopes"]["status"] == "fail"
    # what cannot be seen from this machine is said, never passed
    assert by_check["network.from_meta"]["status"] == "cannot_check"
    assert "openssl s_client" in by_check["network.from_meta"]["fix"]
    assert report["ok"] is False and report["exit_code"] == 1
    assert report["summary"]["fail"] == sum(1 for c in report["checks"] if c["status"] == "fail")

    human = subprocess.run([*CLI, "doctor"], capture_output=True, text=True, env=env, timeout=120)
    assert human.returncode == 1
    assert "[FAIL] ami.connection: ami_url is not set" in human.stdout
    assert "fix: set ami_url" in human.stdout
    assert "not checkable from here" in human.stdout


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    env = serve_env(tmp_path, THOTH_AMI_URL="http://not-ami")
    out = subprocess.run([*CLI, "doctor"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "ami_url" in out.stderr
