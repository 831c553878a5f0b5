"""The Asterisk test harness works against a real Asterisk 22, and docker/ matches it.

Raw protocols on purpose (asyncio sockets for AMI and the ARI websocket, urllib for ARI
REST): these tests check the harness, not the service's clients. No pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.harness import asterisk as ah
from thoth_pbx.core.settings import ENV_PREFIX, setting_keys

REPO = Path(__file__).resolve().parents[2]
sandbox = ah.sandbox

needs_asterisk = pytest.mark.asterisk
_reason = ah.unavailable_reason()
skip_no_harness = pytest.mark.skipif(_reason is not None and ah.external_instance() is None, reason=str(_reason))
skip_no_chroot = pytest.mark.skipif(
    _reason is not None or ah.external_instance() is not None,
    reason=str(_reason or "THOTH_TEST_AMI points at an external Asterisk"),
)


# ----------------------------------------------------------------- raw protocol helpers


async def _ami_login(host: str, port: int, user: str, secret: str) -> tuple[str, dict]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    try:
        banner = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        writer.write(f"Action: Login\r\nActionID: login-1\r\nUsername: {user}\r\nSecret: {secret}\r\n\r\n".encode())
        await writer.drain()
        while True:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            msg = dict(line.split(": ", 1) for line in raw.decode().strip().split("\r\n") if ": " in line)
            if msg.get("ActionID") == "login-1":
                return banner, msg
    finally:
        writer.close()


def _ari(inst: ah.AsteriskInstance, method: str, path: str, password: str | None = None) -> tuple[int, object]:
    req = urllib.request.Request(f"{inst.ari_url}{path}", method=method)
    token = f"{inst.ari_user}:{inst.ari_password if password is None else password}"
    req.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body) if body else None
        except ValueError:
            return err.code, body.decode(errors="replace")


class _WebSocket:
    """Just enough RFC 6455 client for ARI's /ari/events (text frames, ping/pong, close)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str, user: str, password: str):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        key = base64.b64encode(os.urandom(16)).decode()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Basic {auth}\r\n\r\n".encode()
        )
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        status = head.split("\r\n", 1)[0]
        assert " 101 " in status, head
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head.strip().split("\r\n")[1:])}
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        assert headers.get("sec-websocket-accept") == accept, headers
        return cls(reader, writer)

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def recv_text(self) -> str:
        parts: list[bytes] = []
        while True:
            b0, b1 = await self.reader.readexactly(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            mask = await self.reader.readexactly(4) if b1 & 0x80 else None
            payload = await self.reader.readexactly(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by Asterisk")
            if opcode in (0x1, 0x0):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    async def close(self) -> None:
        try:
            self._send(0x8, (1000).to_bytes(2, "big"))
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        self.writer.close()


def _pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def biz():
    inst = ah.acquire("harness-biz", host="127.0.0.1")
    yield inst
    ah.release(inst)


@pytest.fixture(scope="module")
def meta():
    if ah.external_instance() is not None:
        pytest.skip("second instance needs the chroot harness")
    inst = ah.start_instance("harness-meta", host="127.0.0.2")
    yield inst
    ah.release(inst)


# ---------------------------------------------------------------------------- tests


@needs_asterisk
@skip_no_harness
def test_ami_login_succeeds_and_wrong_secret_is_refused(biz):
    banner, ok = asyncio.run(_ami_login(biz.host, biz.ami_port, biz.ami_user, biz.ami_secret))
    assert banner.startswith("Asterisk Call Manager/")
    assert ok["Response"] == "Success", ok
    _, bad = asyncio.run(_ami_login(biz.host, biz.ami_port, biz.ami_user, "wrong-secret"))
    assert bad["Response"] == "Error", bad
    assert "Authentication failed" in bad.get("Message", ""), bad


@needs_asterisk
@skip_no_harness
def test_ari_rest_reports_asterisk_22(biz):
    status, info = _ari(biz, "GET", "/asterisk/info")
    assert status == 200, info
    assert info["system"]["version"].startswith("22."), info["system"]
    status, _ = _ari(biz, "GET", "/asterisk/info", password="wrong-password")
    assert status == 401


@needs_asterisk
@skip_no_harness
def test_ari_events_websocket_delivers_stasis_start(biz):
    app = f"harness-{uuid.uuid4().hex[:8]}"

    async def scenario() -> dict:
        ws = await _WebSocket.connect(biz.host, biz.http_port, f"/ari/events?app={app}", biz.ari_user, biz.ari_password)
        try:
            # The app is registered once the websocket is up; confirm instead of guessing.
            status, body = await asyncio.to_thread(_ari, biz, "GET", f"/applications/{app}")
            assert status == 200, body
            status, chan = await asyncio.to_thread(_ari, biz, "POST", f"/channels?endpoint=Local/s@default&app={app}")
            assert status == 200, chan

            async def until_start() -> dict:
                while True:
                    event = json.loads(await ws.recv_text())
                    if event.get("type") == "StasisStart" and event["channel"]["id"] == chan["id"]:
                        return event

            event = await asyncio.wait_for(until_start(), 15)
            status, _ = await asyncio.to_thread(_ari, biz, "DELETE", f"/channels/{chan['id']}")
            assert status == 204

            async def until_end() -> dict:
                while True:
                    ev = json.loads(await ws.recv_text())
                    if ev.get("type") == "StasisEnd" and ev["channel"]["id"] == chan["id"]:
                        return ev

            await asyncio.wait_for(until_end(), 15)
            return event
        finally:
            await ws.close()

    event = asyncio.run(scenario())
    assert event["application"] == app
    assert event["channel"]["name"].startswith("Local/s@default")


@needs_asterisk
@skip_no_harness
def test_cli_runs_commands(biz):
    out = biz.cli("core show version")
    assert "Asterisk 22." in out
    modules = biz.cli("module show like opus") + biz.cli("module show like res_srtp")
    for mod in ("codec_opus_open_source.so", "res_format_attr_opus.so", "res_srtp.so"):
        assert mod in modules


@needs_asterisk
@skip_no_chroot
def test_config_dir_is_writable_and_read_by_asterisk(biz):
    ext = biz.config_dir / "extensions.conf"
    original = ext.read_text()
    try:
        ext.write_text(original + "\n[harness-probe]\nexten => 100,1,Hangup()\n")
        biz.cli("dialplan reload")
        assert "'100' =>" in biz.cli("dialplan show harness-probe")
    finally:
        ext.write_text(original)
        biz.cli("dialplan reload")


@needs_asterisk
@skip_no_chroot
def test_two_instances_run_at_once(biz, meta):
    assert biz.is_running() and meta.is_running()
    assert biz.pid != meta.pid
    assert (biz.host, meta.host) == ("127.0.0.1", "127.0.0.2")
    for inst in (biz, meta):
        _, ok = asyncio.run(_ami_login(inst.host, inst.ami_port, inst.ami_user, inst.ami_secret))
        assert ok["Response"] == "Success"
        status, info = _ari(inst, "GET", "/asterisk/info")
        assert status == 200 and info["config"]["name"] == inst.name
        assert f"/thoth/instances/{inst.name}/etc-asterisk" in inst.cli("core show settings")
        transports = inst.cli("pjsip show transports")
        assert f"{inst.host}:{inst.sip_port}" in transports


@needs_asterisk
@skip_no_chroot
def test_restart_keeps_files_and_stop_really_stops():
    inst = ah.start_instance("harness-stop", host="127.0.0.1")
    try:
        first_pid = inst.pid
        marker = inst.config_dir / "pjsip_thoth.conf"
        marker.write_text("; written by the service\n")
        inst.restart()
        assert inst.pid and inst.pid != first_pid and _pid_gone(first_pid)
        assert marker.read_text() == "; written by the service\n"
        _, ok = asyncio.run(_ami_login(inst.host, inst.ami_port, inst.ami_user, inst.ami_secret))
        assert ok["Response"] == "Success"
    finally:
        pid = inst.pid
        inst.stop()
    assert pid and _pid_gone(pid)
    assert not inst.is_running()
    with pytest.raises(OSError):
        socket.create_connection((inst.host, inst.ami_port), timeout=2).close()
    assert sandbox.status("harness-stop")[0]["running"] is False


@needs_asterisk
@skip_no_chroot
def test_build_records_asterisk_version():
    info = ah.ensure_built()
    assert info["action"] == "reused"
    assert info["packages"] == sandbox.read_packages()
    assert ah.asterisk_version().startswith("Asterisk 22.")
    assert info["asterisk"] == ah.asterisk_version()


@needs_asterisk
@skip_no_chroot
def test_failed_fresh_build_falls_back_to_last_good_root(tmp_path, monkeypatch):
    """sid can be briefly uninstallable: a failing debootstrap must not cost the root."""
    ah.ensure_built()
    tarball = sandbox._tarball()
    assert tarball is not None, "a successful build keeps a tarball of the last good root"
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(tarball, cache / tarball.name)
    monkeypatch.setenv("THOTH_HARNESS_CACHE", str(cache))
    # A mirror that refuses connections (loopback, closed port): debootstrap fails at once.
    monkeypatch.setenv("THOTH_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    try:
        restored = sandbox.build()
        assert restored["action"] == "restored-last-good", restored
        assert sandbox.root_is_complete()
        assert (cache / "asterisk-version").read_text().startswith("Asterisk 22.")
        kept = sandbox.build(refresh=True)
        assert kept["action"] == "kept-last-good", kept
        assert "debootstrap failed" in kept["error"]
        assert sandbox.root_is_complete()
    finally:
        sandbox._remove_tree(cache / "sid-root")


def test_mirror_comes_from_apt_sources_or_env(monkeypatch):
    monkeypatch.delenv("THOTH_DEBIAN_MIRROR", raising=False)
    try:
        mirror = sandbox.debian_mirror()
    except sandbox.HarnessError:
        pytest.skip("this machine's apt has no Debian mirror configured")
    assert mirror.startswith(("http://", "https://")) and mirror.endswith("/debian")
    monkeypatch.setenv("THOTH_DEBIAN_MIRROR", "http://127.0.0.1:3142/debian/")
    assert sandbox.debian_mirror() == "http://127.0.0.1:3142/debian"


# ----------------------------------------------------------- docker/ stays in step


def _dockerfile() -> str:
    return (REPO / "docker" / "Dockerfile.asterisk").read_text()


def test_docker_image_uses_same_suite_and_package_list():
    text = _dockerfile()
    assert re.search(rf"^FROM debian:{sandbox.SUITE}-slim$", text, re.M)
    # packages.txt is copied in and is the only source of the apt-get install list
    assert re.search(r"^COPY config/asterisk/packages\.txt (\S+)$", text, re.M)
    dest = re.search(r"^COPY config/asterisk/packages\.txt (\S+)$", text, re.M).group(1)
    install = re.search(r"RUN apt-get update(.*?)(?:\n\n|\Z)", text, re.S).group(1)
    assert dest in install and "apt-get install" in install and "xargs" in install
    assert "--no-install-recommends" in install  # debootstrap does not take Recommends either
    for pkg in sandbox.read_packages():
        assert not re.search(rf"apt-get install[^\n]*\b{re.escape(pkg)}\b", text), (
            f"{pkg} is named in the Dockerfile; list it only in packages.txt"
        )


def test_docker_image_copies_the_harness_templates():
    text = _dockerfile()
    m = re.search(r"^COPY config/asterisk/\*\.conf (\S+)/$", text, re.M)
    assert m, "Dockerfile.asterisk must COPY config/asterisk/*.conf (all harness templates)"
    assert "THOTH_AST_TEMPLATES:=" + m.group(1) in (REPO / "docker" / "asterisk-entrypoint.sh").read_text()
    assert sandbox.template_files(), "no templates in config/asterisk"


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("sed") is None, reason="needs sh and sed")
def test_docker_entrypoint_renders_exactly_like_the_harness(tmp_path):
    spec = sandbox.InstanceSpec(
        name="parity",
        bind="127.0.0.2",
        ami_port=5039,
        http_port=8089,
        sip_port=5070,
        rtp_start=20000,
        rtp_end=20100,
        ami_secret="s3cr3t.AMI",
        ari_password="p4ss-ARI",
    )
    values = spec.template_values()
    assert set(values) == sandbox.template_placeholders(), "InstanceSpec misses a placeholder"
    py_dir, sh_dir = tmp_path / "py", tmp_path / "sh"
    # The entry point writes into ETC_DIR, which is also a rendered value: use one value.
    values = dict(values, ETC_DIR=str(sh_dir))
    sandbox.render_templates(py_dir, values)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "THOTH_AST_TEMPLATES": str(sandbox.TEMPLATE_DIR)}
    env.update({f"THOTH_AST_{k}": v for k, v in values.items()})
    subprocess.run(
        ["sh", str(REPO / "docker" / "asterisk-entrypoint.sh"), "render"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    py_files = sorted(p.name for p in py_dir.iterdir())
    assert py_files == sorted(p.name for p in sh_dir.iterdir())
    assert py_files == [p.name for p in sandbox.template_files()]
    for name in py_files:
        assert (sh_dir / name).read_text() == (py_dir / name).read_text(), name
        assert "@@" not in (py_dir / name).read_text()


def test_compose_wires_the_harness_default_ports():
    text = (REPO / "docker" / "compose.yml").read_text()
    for port in ("5038:5038/tcp", "8088:8088/tcp", "5060:5060/udp"):
        assert port in text
    assert "dockerfile: docker/Dockerfile.asterisk" in text
    assert "dockerfile: docker/Dockerfile.thoth" in text
    spec = sandbox.InstanceSpec(name="x")
    assert (spec.ami_port, spec.http_port, spec.sip_port) == (5038, 8088, 5060)


def test_compose_files_set_only_variables_someone_reads():
    """A renamed setting or template placeholder must not leave a compose file setting a
    variable nobody reads (the service would silently run on its default)."""
    settings = {ENV_PREFIX + key.upper() for key in setting_keys()}
    placeholders = sandbox.template_placeholders()
    for name in ("compose.yml", "compose.cluster.yml"):
        text = (REPO / "docker" / name).read_text()
        names = set(re.findall(r"^\s+(THOTH_[A-Z_]+):", text, re.M))
        service = {n for n in names if not n.startswith("THOTH_AST_")}
        assert service and service <= settings, (name, sorted(service - settings))
        image = {n.removeprefix("THOTH_AST_") for n in names if n.startswith("THOTH_AST_")}
        assert image and image <= placeholders, (name, sorted(image - placeholders))


def test_cluster_instances_share_the_key_the_files_and_one_database():
    text = (REPO / "docker" / "compose.cluster.yml").read_text()
    section = text.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    services = re.split(r"^  (?=[a-z-]+:\n)", section, flags=re.M)
    instances = [s for s in services if s.startswith("thoth-")]
    assert len(instances) >= 2
    for block in instances:
        assert "<<: *thoth\n" in block and "<<: *thoth-env" in block
    shared = text.split("x-thoth: &thoth", 1)[1].split("\nx-thoth-env", 1)[0]
    for volume in ("thoth-keys:", "thoth-shared:", "asterisk-etc:"):
        assert volume in shared
    env = text.split("x-thoth-env: &thoth-env", 1)[1].split("\nservices:", 1)[0]
    for key in ("THOTH_DATABASE_URL: postgresql://", "THOTH_SECRET_KEY_FILE: /var/lib/thoth-pbx/keys/"):
        assert key in env
    for key in ("THOTH_RECORDINGS_DIR: /var/lib/thoth-pbx/shared/", "THOTH_MEDIA_DIR: /var/lib/thoth-pbx/shared/"):
        assert key in env
