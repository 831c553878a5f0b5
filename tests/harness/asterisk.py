"""Real Asterisk 22 for tests: helpers for pytest fixtures (no fixtures defined here).

The work is done by scripts/asterisk_sandbox.py (a Debian sid chroot under
$THOTH_HARNESS_CACHE, default /var/cache/thoth-pbx/harness; see docs/asterisk-harness.md).
This module wraps it in a small typed API. Everything is synchronous, so it works from
plain and async tests alike (call it from a fixture, not from inside a running loop if
the ~1 s start matters to you).

API to call from tests/conftest.py
----------------------------------
``unavailable_reason() -> str | None``
    Why no Asterisk can be had here (not root, no chroot tool), or None. Ignores an
    external Asterisk; ``acquire`` checks that first.
``ensure_built(refresh=False) -> dict``
    Build (or reuse) the sid chroot; returns the marker info (``asterisk`` version, ...).
``acquire(name="thoth-test", **start_kwargs) -> AsteriskInstance``
    The external Asterisk from THOTH_TEST_* env vars if set, else ``start_instance``.
``release(inst) -> None``
    Stop it if the harness started it (external instances are left alone).
``start_instance(name, host="127.0.0.1", ami_port=None, http_port=None, sip_port=None,
                 rtp_start=None, rtp_end=None, fresh=True, timeout=90.0) -> AsteriskInstance``
    Start a chroot instance (builds the chroot first when needed). A port left None
    is a free one chosen now. An instance of that name still running (left over from a
    killed run) is stopped first; fresh=True wipes its dir (config, logs, astdb).
    Returns once AMI said FullyBooted.
``stop_instance(name) -> None``
``external_instance() -> AsteriskInstance | None``
    From THOTH_TEST_AMI=host:port, THOTH_TEST_AMI_USER, THOTH_TEST_AMI_SECRET,
    THOTH_TEST_ARI=http://user:pass@host:port, THOTH_TEST_ASTERISK_CONFIG_DIR.
``asterisk_version() -> str | None``
    The version recorded by the last build (<cache>/asterisk-version, first line).

``AsteriskInstance`` fields: name, host, ami_port, ami_user, ami_secret, http_port,
ari_user, ari_password, config_dir (Path, host path, writable), sip_port (None when
external), pid, managed (False for an external Asterisk), version, log_file.
Properties: ``ari_url`` ("http://host:port/ari"), ``ari_base`` ("http://host:port"),
``ami_address`` ((host, port)).
Methods: ``cli(cmd) -> str`` (``asterisk -rx``; over AMI ``Command`` when external),
``start()``, ``stop()``, ``restart()`` (keeps every file in config_dir, same ports and
secrets), ``is_running() -> bool``, ``reload(module) -> str`` (CLI ``module reload``).

Suggested fixture (session scope; one instance shared by the session):

    from tests.harness import asterisk as ast_harness   # or: from harness import asterisk

    @pytest.fixture(scope="session")
    def asterisk():
        reason = ast_harness.unavailable_reason()
        if ast_harness.external_instance() is None and reason:
            pytest.skip(reason)          # or fail in CI
        inst = ast_harness.acquire("thoth-test")
        yield inst
        ast_harness.release(inst)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import socket
import sys
import urllib.parse
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_PATH = REPO_ROOT / "scripts" / "asterisk_sandbox.py"


def _load_sandbox() -> ModuleType:
    name = "thoth_asterisk_sandbox"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SANDBOX_PATH)
    assert spec and spec.loader, SANDBOX_PATH
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sandbox = _load_sandbox()
HarnessError = sandbox.HarnessError


@dataclasses.dataclass
class AsteriskInstance:
    name: str
    host: str
    ami_port: int
    ami_user: str
    ami_secret: str
    http_port: int
    ari_user: str
    ari_password: str
    config_dir: Path | None
    sip_port: int | None = None
    pid: int | None = None
    managed: bool = True
    version: str | None = None
    log_file: Path | None = None
    ari_host: str | None = None  # when ARI is not on ``host`` (external Asterisk only)

    @property
    def ari_base(self) -> str:
        return f"http://{self.ari_host or self.host}:{self.http_port}"

    @property
    def ari_url(self) -> str:
        return f"{self.ari_base}/ari"

    @property
    def ami_address(self) -> tuple[str, int]:
        return (self.host, self.ami_port)

    def cli(self, command: str) -> str:
        """Run an Asterisk CLI command and return its output (raises on failure)."""
        if not self.managed:
            ami = sandbox.AmiClient(self.host, self.ami_port)
            try:
                ami.login(self.ami_user, self.ami_secret)
                return ami.command(command)
            finally:
                ami.close()
        res = sandbox.cli(self.name, command)
        if res.returncode != 0:
            raise HarnessError(
                f"asterisk -rx {command!r} failed ({res.returncode}): {(res.stdout + res.stderr).strip()}"
            )
        return res.stdout

    def reload(self, module: str) -> str:
        return self.cli(f"module reload {module}")

    def is_running(self) -> bool:
        if not self.managed:
            try:
                socket.create_connection(self.ami_address, timeout=2).close()
                return True
            except OSError:
                return False
        return sandbox._live_pid(self.name) is not None

    def _need_managed(self, what: str) -> None:
        if not self.managed:
            raise HarnessError(f"cannot {what} an external Asterisk ({self.host}:{self.ami_port})")

    def stop(self) -> None:
        self._need_managed("stop")
        sandbox.stop(self.name)
        self.pid = None

    def start(self, timeout: float = sandbox.DEFAULT_READY_TIMEOUT) -> None:
        """Start again with the same ports, secrets and config files (nothing re-rendered)."""
        self._need_managed("start")
        spec = sandbox.InstanceSpec(name=self.name)
        info = sandbox.start(spec, keep_config=True, timeout=timeout, build_if_missing=False)
        self.pid = info["pid"]

    def restart(self, timeout: float = sandbox.DEFAULT_READY_TIMEOUT) -> None:
        self.stop()
        self.start(timeout)


def _from_info(info: dict) -> AsteriskInstance:
    return AsteriskInstance(
        name=info["name"],
        host=info["host"],
        ami_port=info["ami_port"],
        ami_user=info["ami_user"],
        ami_secret=info["ami_secret"],
        http_port=info["http_port"],
        ari_user=info["ari_user"],
        ari_password=info["ari_password"],
        config_dir=Path(info["config_dir"]),
        sip_port=info["sip_port"],
        pid=info["pid"],
        managed=True,
        version=info.get("asterisk_version"),
        log_file=Path(info["log_file"]),
    )


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Asterisk chroot harness needs root (chroot, mount, debootstrap)"
    if shutil.which("chroot") is None:
        return "no chroot binary"
    return None


def ensure_built(refresh: bool = False) -> dict:
    return sandbox.build(refresh=refresh)


def asterisk_version() -> str | None:
    try:
        return sandbox.version_file().read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def start_instance(
    name: str = "thoth-test",
    host: str = "127.0.0.1",
    ami_port: int | None = None,
    http_port: int | None = None,
    sip_port: int | None = None,
    rtp_start: int | None = None,
    rtp_end: int | None = None,
    fresh: bool = True,
    timeout: float = sandbox.DEFAULT_READY_TIMEOUT,
    credentials: dict[str, str] | None = None,
) -> AsteriskInstance:
    """`credentials` may fix ami_user/ami_secret/ari_user/ari_password (else random secrets)."""
    if not host.startswith("127."):
        raise HarnessError("the harness binds loopback addresses only (127.x.y.z)")
    if sandbox.root_is_complete() and sandbox._live_pid(name):
        sandbox.stop(name)  # left over from a test run that was killed
    spec = sandbox.InstanceSpec(
        name=name,
        bind=host,
        ami_port=ami_port or sandbox.free_port(host),
        http_port=http_port or sandbox.free_port(host),
        sip_port=sip_port or sandbox.free_port(host, socket.SOCK_DGRAM),
        rtp_start=rtp_start or 10000,
        rtp_end=rtp_end or 20000,
        **(credentials or {}),
    )
    return _from_info(sandbox.start(spec, fresh=fresh, timeout=timeout))


def stop_instance(name: str) -> None:
    sandbox.stop(name)


def external_instance() -> AsteriskInstance | None:
    ami = os.environ.get("THOTH_TEST_AMI")
    if not ami:
        return None
    host, _, port = ami.rpartition(":")
    ari = urllib.parse.urlsplit(os.environ.get("THOTH_TEST_ARI", ""))
    config_dir = os.environ.get("THOTH_TEST_ASTERISK_CONFIG_DIR")
    return AsteriskInstance(
        name="external",
        host=host or "127.0.0.1",
        ami_port=int(port),
        ami_user=os.environ.get("THOTH_TEST_AMI_USER", "thoth"),
        ami_secret=os.environ.get("THOTH_TEST_AMI_SECRET", ""),
        http_port=ari.port or 8088,
        ari_user=urllib.parse.unquote(ari.username or "thoth"),
        ari_password=urllib.parse.unquote(ari.password or ""),
        config_dir=Path(config_dir) if config_dir else None,
        sip_port=None,
        pid=None,
        managed=False,
        ari_host=ari.hostname,
    )


def acquire(name: str = "thoth-test", **start_kwargs) -> AsteriskInstance:
    ext = external_instance()
    if ext is not None:
        return ext
    return start_instance(name, **start_kwargs)


def release(inst: AsteriskInstance) -> None:
    if inst.managed:
        inst.stop()
