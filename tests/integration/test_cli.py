"""The command line as a user runs it: a real subprocess each time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

from tests.support.cli import serve_env
from thoth_pbx.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "thoth_pbx.cli"]


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths.extend(_subcommand_paths(sub, prefix + (name,)))
    return paths


def test_help_lists_every_subcommand_and_each_has_help() -> None:
    top = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True).stdout
    paths = _subcommand_paths(build_parser())
    assert {("serve",), ("db",), ("db", "upgrade"), ("config", "check")} <= set(paths)
    for path in paths:
        if len(path) == 1:
            assert path[0] in top
        out = subprocess.run([*CLI, *path, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (path, out.stderr)
        assert "usage:" in out.stdout


def test_bad_setting_is_one_line_naming_the_key(tmp_path: Path) -> None:
    env = {**os.environ, "THOTH_AMI_URL": "tcp://nouser@host", "THOTH_SECRET_KEY_FILE": str(tmp_path / "k")}
    out = subprocess.run([*CLI, "config", "check"], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "THOTH_AMI_URL" in lines[0] and "ami_url" in lines[0]


def test_serve_starts_migrates_answers_and_stops_cleanly(tmp_path: Path) -> None:
    env = serve_env(tmp_path)
    port = int(env["THOTH_LISTEN"].rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [*CLI, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        banner = [proc.stdout.readline() for _ in range(6)]  # blocks until the service printed it
        assert "listening on" in banner[0]
        assert banner[1].split() == ["panel:", f"http://127.0.0.1:{port}/panel/"]
        password = (tmp_path / "admin-password").read_text().strip()
        assert oct((tmp_path / "admin-password").stat().st_mode & 0o777) == "0o600"
        assert password in banner[5]
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5))
        assert health["database"]["state"] == "ok" and health["ami"]["state"] == "disabled"
        out = subprocess.run([*CLI, "db", "current"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["up_to_date"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    logs = proc.stderr.read()
    assert password not in logs


def test_wheel_carries_templates_and_finds_them_installed(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("thoth_pbx-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("asterisk_templates", "dialplan", "config"):
        shipped = {p.name for p in (REPO / folder).rglob("*") if p.is_file()}
        in_wheel = {Path(n).name for n in names if n.startswith(f"thoth_pbx/_data/{folder}/")}
        assert shipped and shipped <= in_wheel, folder
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = "from thoth_pbx.core.resources import data_dir; print(data_dir('dialplan'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
        check=True,
    )
    assert out.stdout.strip().startswith(str(target))
