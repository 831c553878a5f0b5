#!/usr/bin/env python3
"""Real Asterisk 22 for thoth-pbx tests: a Debian sid chroot plus loopback instances.

Python 3.11 standard library only. Use it through the ``scripts/asterisk-sandbox``
wrapper (see ``--help``) or import it (tests/harness/asterisk.py does).

    asterisk-sandbox build [--refresh]
    asterisk-sandbox start NAME [--bind 127.0.0.1] [--ami-port 5038] [--http-port 8088]
                                [--sip-port 5060] [--fresh] [--keep-config]
    asterisk-sandbox stop NAME
    asterisk-sandbox status [NAME]
    asterisk-sandbox cli NAME 'core show version'
    asterisk-sandbox render DIR [--set KEY=VALUE ...]
    asterisk-sandbox remove NAME

How it works (details in docs/asterisk-harness.md):

* ``build`` debootstraps Debian sid (variant minbase) with the packages of
  config/asterisk/packages.txt into ``$THOTH_HARNESS_CACHE/sid-root`` (default cache
  /var/cache/thoth-pbx/harness). The root is reused while it is complete (marker file)
  and made for the same package list. Downloaded .debs stay in ``<cache>/debs``, and a
  tarball of the last good root is kept in ``<cache>/last-good-root.tar.*``; when a fresh
  debootstrap fails (sid is briefly uninstallable during library transitions) the last
  good root is kept or restored. The Asterisk version is written to
  ``<cache>/asterisk-version``. The Debian mirror is the one this machine's apt uses
  (read from /etc/apt/sources.list*), or ``$THOTH_DEBIAN_MIRROR``.
* ``start`` renders the templates config/asterisk/*.conf (``@@NAME@@`` placeholders) into
  ``<root>/thoth/instances/NAME/etc-asterisk`` (world-writable: the service writes its own
  files there), mounts /proc in the root, runs ``chroot <root> asterisk -f`` in its own
  session, and waits until AMI login succeeds and the ``FullyBooted`` event arrives. It
  prints one JSON line describing the instance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / "config" / "asterisk"
PACKAGES_FILE = TEMPLATE_DIR / "packages.txt"

SUITE = "sid"
VARIANT = "minbase"
DEFAULT_CACHE = "/var/cache/thoth-pbx/harness"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ASTERISK_BIN = "/usr/sbin/asterisk"
# Inside the chroot; short on purpose (the control socket path must stay < 108 bytes).
INSTANCES_IN_ROOT = "/thoth/instances"
COMPLETE_MARKER = ".thoth-harness-complete"

DEFAULT_READY_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 15.0

# Values substituted into templates must be safe for sed in docker/asterisk-entrypoint.sh
# (which uses '|' as delimiter) and for Asterisk's config parser.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._/+:-]*$")
PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")


class HarnessError(RuntimeError):
    """Anything that keeps the sandbox from doing what was asked; message says why."""


# --------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    return Path(os.environ.get("THOTH_HARNESS_CACHE") or DEFAULT_CACHE)


def root_dir() -> Path:
    return cache_dir() / "sid-root"


def debs_dir() -> Path:
    return cache_dir() / "debs"


def version_file() -> Path:
    return cache_dir() / "asterisk-version"


def instances_dir(root: Path | None = None) -> Path:
    return (root or root_dir()) / INSTANCES_IN_ROOT.lstrip("/")


def instance_dir(name: str, root: Path | None = None) -> Path:
    check_name(name)
    return instances_dir(root) / name


def check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", name):
        raise HarnessError(f"bad instance name {name!r}: use [A-Za-z0-9_.-], at most 32 chars")


# ------------------------------------------------------------------------- packages


def read_packages(path: Path = PACKAGES_FILE) -> list[str]:
    """The package list, in file order, without comments and blank lines."""
    pkgs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkgs.append(line)
    if not pkgs:
        raise HarnessError(f"{path} lists no packages")
    return pkgs


# ------------------------------------------------------------------------ templates


def template_files(template_dir: Path = TEMPLATE_DIR) -> list[Path]:
    """Every Asterisk config template the harness renders (and the Docker image copies)."""
    return sorted(template_dir.glob("*.conf"))


def template_placeholders(template_dir: Path = TEMPLATE_DIR) -> set[str]:
    names: set[str] = set()
    for path in template_files(template_dir):
        names.update(PLACEHOLDER.findall(path.read_text()))
    return names


def render_text(text: str, values: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise HarnessError(f"no value for template placeholder @@{key}@@")
        return values[key]

    return PLACEHOLDER.sub(sub, text)


def render_templates(dest: Path, values: Mapping[str, str], template_dir: Path = TEMPLATE_DIR) -> list[Path]:
    """Render every template into ``dest`` (atomic per file). Other files are left alone."""
    for key, value in values.items():
        if not SAFE_VALUE.match(str(value)):
            raise HarnessError(f"unsafe value for {key}: {value!r} (allowed: {SAFE_VALUE.pattern})")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for tpl in template_files(template_dir):
        out = dest / tpl.name
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(render_text(tpl.read_text(), values))
        os.chmod(tmp, 0o666)
        os.replace(tmp, out)
        written.append(out)
    return written


# ------------------------------------------------------------------------ apt / mirror


def _apt_source_files() -> list[Path]:
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def _apt_entries() -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of every enabled 'deb' entry, one-line and deb822 formats."""
    for path in _apt_source_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, val = line.partition(":")
                    fields[key.strip().lower()] = val.strip()
                if "deb" not in fields.get("types", "").split():
                    continue
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if not line.startswith("deb "):
                    continue
                parts = line.split()[1:]
                if parts and parts[0].startswith("["):  # options like [arch=amd64]
                    while parts and not parts[0].endswith("]"):
                        parts.pop(0)
                    parts.pop(0) if parts else None
                if len(parts) >= 2:
                    yield parts[0], [parts[1]]


def debian_mirror() -> str:
    """The Debian archive mirror: $THOTH_DEBIAN_MIRROR, else the one apt is set up with."""
    env = os.environ.get("THOTH_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    for uri, suites in _apt_entries():
        clean = uri.rstrip("/")
        if not clean.endswith("/debian"):
            continue  # debian-security, debian-ports, third-party repositories
        if suites and all(s.endswith("-security") for s in suites):
            continue
        return clean
    raise HarnessError("no Debian mirror found in /etc/apt/sources.list*; set THOTH_DEBIAN_MIRROR")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, text=True, **kw)


def ensure_debootstrap() -> str:
    path = shutil.which("debootstrap")
    if path:
        return path
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    pkgs = ["debootstrap", "debian-archive-keyring"]
    _log("installing debootstrap with apt-get")
    r = _run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env, capture_output=True)
    if r.returncode != 0:
        _run(["apt-get", "update"], env=env, capture_output=True)
        r = _run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs], env=env, capture_output=True)
    path = shutil.which("debootstrap")
    if r.returncode != 0 or not path:
        raise HarnessError(f"could not install debootstrap: {r.stderr.strip()[-2000:]}")
    return path


# ------------------------------------------------------------------------------ build


def _log(msg: str) -> None:
    print(f"asterisk-sandbox: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_marker(root: Path | None = None) -> dict | None:
    marker = (root or root_dir()) / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def root_is_complete(root: Path | None = None) -> bool:
    root = root or root_dir()
    marker = read_marker(root)
    return bool(marker and marker.get("packages") == read_packages() and (root / ASTERISK_BIN.lstrip("/")).exists())


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            mnt = line.split()[1].replace("\\040", " ")
            if mnt.startswith(prefix):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """rm -rf a chroot, never descending into something still mounted inside it."""
    if not path.exists():
        return
    for mnt in mounts_under(path):
        _run(["umount", "-l", mnt], capture_output=True)
    left = mounts_under(path)
    if left:
        raise HarnessError(f"refusing to delete {path}: still mounted: {left}")
    shutil.rmtree(path)


def _asterisk_version(root: Path) -> dict:
    def q(args: list[str]) -> str:
        r = _run(["chroot", str(root), *args], capture_output=True)
        if r.returncode != 0:
            raise HarnessError(f"{' '.join(args)} failed in {root}: {r.stderr.strip()}")
        return r.stdout.strip()

    return {
        "asterisk": q([ASTERISK_BIN, "-V"]),
        "package": q(["dpkg-query", "-W", "-f", "${Version}", "asterisk"]),
        "modules_package": q(["dpkg-query", "-W", "-f", "${Version}", "asterisk-modules"]),
        "libc6": q(["dpkg-query", "-W", "-f", "${Version}", "libc6"]),
    }


def _tarball() -> Path | None:
    for p in sorted(cache_dir().glob("last-good-root.tar.*")):
        return p
    return None


def _save_tarball(root: Path) -> Path:
    zstd = shutil.which("zstd")
    name = "last-good-root.tar.zst" if zstd else "last-good-root.tar.gz"
    out = cache_dir() / name
    tmp = cache_dir() / f".{name}.tmp"
    cmd = [
        "tar",
        "-C",
        str(root),
        "--one-file-system",
        "--numeric-owner",
        "--exclude=./thoth",
        "--exclude=./proc/*",
        "--exclude=./var/cache/apt/archives/*.deb",
        "-cf",
        str(tmp),
        ".",
    ]
    cmd[1:1] = ["--zstd"] if zstd else ["-z"]
    r = _run(cmd, capture_output=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"tar of last good root failed: {r.stderr.strip()[-1000:]}")
    for old in cache_dir().glob("last-good-root.tar.*"):
        if old != out:
            old.unlink()
    os.replace(tmp, out)
    return out


def _restore_tarball(tarball: Path, target: Path) -> None:
    target.mkdir(parents=True)
    flag = "--zstd" if tarball.name.endswith(".zst") else "-z"
    r = _run(["tar", flag, "-C", str(target), "--numeric-owner", "-xpf", str(tarball)], capture_output=True)
    if r.returncode != 0:
        raise HarnessError(f"restoring {tarball} failed: {r.stderr.strip()[-1000:]}")


def _prune_debs(root: Path) -> None:
    """Keep in <cache>/debs only the .debs of the packages now installed in ``root``."""
    r = _run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}_${Version}\n"], capture_output=True)
    if r.returncode != 0:
        return
    keep = {line.replace(":", "%3a") for line in r.stdout.split()}
    for deb in debs_dir().glob("*.deb"):
        if deb.name.rsplit("_", 1)[0] not in keep:
            deb.unlink()


def _debootstrap(target: Path, mirror: str, packages: list[str]) -> float:
    debootstrap = ensure_debootstrap()
    debs_dir().mkdir(parents=True, exist_ok=True)
    cmd = [debootstrap, f"--variant={VARIANT}", f"--include={','.join(packages)}", f"--cache-dir={debs_dir()}"]
    if Path(DEFAULT_KEYRING).exists():
        cmd.append(f"--keyring={DEFAULT_KEYRING}")
    cmd += [SUITE, str(target), mirror]
    log = cache_dir() / "debootstrap.log"
    _log(f"debootstrap {SUITE} from {mirror} into {target} (log: {log})")
    t0 = time.monotonic()
    with open(log, "w") as fh:
        r = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        )
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        tail = _tail(log, 30)
        inner = target / "debootstrap" / "debootstrap.log"
        if inner.exists():
            tail += "\n--- debootstrap/debootstrap.log ---\n" + _tail(inner, 30)
        raise HarnessError(f"debootstrap failed (exit {r.returncode}):\n{tail}")
    return elapsed


def _finish_root(target: Path, info: dict) -> dict:
    """Check the new root runs Asterisk, then write version file and completion marker."""
    missing = []
    for pkg in read_packages():
        r = _run(["chroot", str(target), "dpkg-query", "-W", "-f", "${db:Status-Status}", pkg], capture_output=True)
        if r.stdout.strip() != "installed":
            missing.append(pkg)
    if missing:
        raise HarnessError(f"packages not installed in {target}: {missing}")
    version = _asterisk_version(target)
    (target / INSTANCES_IN_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    info = {**info, **version, "packages": read_packages(), "suite": SUITE}
    (target / COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _write_version(info: dict) -> None:
    version_file().write_text(
        f"{info['asterisk']}\npackage asterisk {info['package']}\n"
        f"package asterisk-modules {info['modules_package']}\nlibc6 {info['libc6']}\n"
        f"built {info.get('built_at', '?')} from {info.get('mirror', '?')}"
        f"{' (restored from last good root)' if info.get('restored') else ''}\n"
    )


def running_instances(root: Path | None = None) -> list[str]:
    d = instances_dir(root)
    if not d.is_dir():
        return []
    return [p.name for p in sorted(d.iterdir()) if p.is_dir() and _live_pid(p.name, root)]


def build(refresh: bool = False) -> dict:
    """Make sure a complete sid root exists; return its marker info (+ 'action')."""
    if os.geteuid() != 0:
        raise HarnessError("building the chroot needs root (debootstrap, chroot)")
    with _lock("build.lock"):
        root = root_dir()
        if not refresh and root_is_complete(root):
            info = read_marker(root) or {}
            if not version_file().exists():
                _write_version(info)
            if _tarball() is None and not running_instances(root):
                _log(f"saved last good root to {_save_tarball(root)}")
            return {**info, "action": "reused", "root": str(root)}
        if running_instances(root):
            raise HarnessError(f"instances running in {root}: {running_instances(root)}; stop them")

        packages = read_packages()
        mirror = debian_mirror()
        target = cache_dir() / f"sid-root.new-{os.getpid()}"
        _remove_tree(target)
        t0 = time.monotonic()
        try:
            seconds = _debootstrap(target, mirror, packages)
            info = _finish_root(
                target,
                {
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "mirror": mirror,
                    "debootstrap_seconds": round(seconds, 1),
                },
            )
        except HarnessError as exc:
            _remove_tree(target)
            if root_is_complete(root):
                _log(f"fresh build failed; keeping the existing root. {exc}")
                info = read_marker(root) or {}
                return {**info, "action": "kept-last-good", "error": str(exc), "root": str(root)}
            tarball = _tarball()
            if tarball is None:
                raise
            _log(f"fresh build failed; restoring last good root from {tarball}. {exc}")
            _restore_tarball(tarball, target)
            old = read_marker(target) or {}
            info = _finish_root(target, {**old, "restored": True, "restored_from": str(tarball)})
            action = "restored-last-good"
        else:
            action = "built"
        # swap the new root in, carrying instance dirs over
        if root.exists():
            old_inst = instances_dir(root)
            if old_inst.is_dir():
                new_inst = instances_dir(target)
                shutil.rmtree(new_inst, ignore_errors=True)
                shutil.move(str(old_inst), str(new_inst))
            trash = cache_dir() / f"sid-root.old-{os.getpid()}"
            os.rename(root, trash)
            os.rename(target, root)
            _remove_tree(trash)
        else:
            os.rename(target, root)
        _write_version(info)
        if action == "built":
            _prune_debs(root)
            # the same .debs are kept in <cache>/debs; don't hold them twice
            for deb in (root / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            tarball = _save_tarball(root)
            _log(f"saved last good root to {tarball}")
        info["total_seconds"] = round(time.monotonic() - t0, 1)
        return {**info, "action": action, "root": str(root)}


# ------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        return False
    return True


def _is_our_asterisk(pid: int, root: Path) -> bool:
    try:
        proc_root = os.readlink(f"/proc/{pid}/root")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == "asterisk" and os.path.realpath(proc_root) == os.path.realpath(root)


def _read_pid(name: str, root: Path | None = None) -> int | None:
    """The instance's pid: its pid file (under its own astrundir), else instance.json."""
    idir = instance_dir(name, root)
    for candidate in (idir / "run" / "asterisk.pid",):
        with contextlib.suppress(OSError, ValueError):
            return int(candidate.read_text().strip())
    meta = load_instance_meta(name, root)
    if meta and meta.get("pid"):
        return int(meta["pid"])
    return None


def _live_pid(name: str, root: Path | None = None) -> int | None:
    root = root or root_dir()
    pid = _read_pid(name, root)
    if pid and _pid_alive(pid) and _is_our_asterisk(pid, root):
        return pid
    return None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(data.splitlines()[-lines:])


def _ensure_proc(root: Path) -> None:
    proc = root / "proc"
    if not os.path.ismount(proc):
        proc.mkdir(exist_ok=True)
        r = _run(["mount", "-t", "proc", "proc", str(proc)], capture_output=True)
        if r.returncode != 0:
            raise HarnessError(f"mounting /proc in {root} failed: {r.stderr.strip()}")
    # debootstrap creates these nodes; recreate any that went missing rather than
    # bind-mounting the host's /dev (an rm -rf of the cache would then hit the host).
    for node, (major, minor) in {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}.items():
        path = root / "dev" / node
        if not path.exists():
            os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
            os.chmod(path, 0o666)


def _release_proc(root: Path, locked: bool = False) -> None:
    """Unmount the root's /proc once no instance runs in it."""
    with contextlib.nullcontext() if locked else _lock("mounts.lock"):
        if running_instances(root):
            return
        proc = root / "proc"
        if os.path.ismount(proc):
            _run(["umount", str(proc)], capture_output=True)
            if os.path.ismount(proc):
                _run(["umount", "-l", str(proc)], capture_output=True)


# ------------------------------------------------------------------------------ AMI


class AmiClient:
    """Minimal synchronous AMI client (banner, Login, actions, events). Used for readiness
    and for ``cli`` on an external Asterisk; the service has its own asyncio client."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.banner = self._readline()
        if not self.banner.startswith("Asterisk Call Manager"):
            raise HarnessError(f"not an AMI banner: {self.banner!r}")
        self._id = 0

    def _readline(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("AMI connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def read_message(self) -> dict[str, str]:
        msg: dict[str, str] = {}
        while True:
            line = self._readline()
            if line == "":
                if msg:
                    return msg
                continue
            key, _, val = line.partition(":")
            key = key.strip()
            if key in msg and key == "Output":
                msg[key] += "\n" + val.strip()
            else:
                msg[key] = val.lstrip(" ")

    def send(self, action: str, **fields: str) -> str:
        self._id += 1
        aid = f"sandbox-{self._id}"
        lines = [f"Action: {action}", f"ActionID: {aid}"]
        for k, v in fields.items():
            for item in v if isinstance(v, list) else [v]:
                lines.append(f"{k}: {item}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return aid

    def action(self, action: str, **fields: str) -> dict[str, str]:
        aid = self.send(action, **fields)
        while True:
            msg = self.read_message()
            if msg.get("ActionID") == aid and "Response" in msg:
                return msg

    def login(self, user: str, secret: str) -> dict[str, str]:
        resp = self.action("Login", Username=user, Secret=secret)
        if resp.get("Response") != "Success":
            raise HarnessError(f"AMI login refused: {resp.get('Message', resp)}")
        return resp

    def wait_event(self, name: str, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event within {timeout}s")
            self.sock.settimeout(left)
            msg = self.read_message()
            if msg.get("Event") == name:
                return msg

    def command(self, cmd: str) -> str:
        resp = self.action("Command", Command=cmd)
        if resp.get("Response") not in ("Success", "Follows"):
            raise HarnessError(f"AMI Command {cmd!r} failed: {resp.get('Message', resp)}")
        return resp.get("Output", "")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"Action: Logoff\r\n\r\n")
        self.sock.close()


def wait_fully_booted(host: str, port: int, user: str, secret: str, timeout: float, alive=lambda: True) -> float:
    """Poll until AMI accepts a connection and login, then wait for FullyBooted.

    Asterisk sends FullyBooted to every session that logs in after boot, and broadcasts
    it to sessions logged in before. Returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise HarnessError(f"Asterisk exited while starting (last AMI error: {last_err})")
        try:
            ami = AmiClient(host, port, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        except (OSError, ConnectionError) as exc:
            last_err = exc
            time.sleep(0.1)
            continue
        try:
            ami.login(user, secret)
            ami.wait_event("FullyBooted", max(0.1, deadline - time.monotonic()))
            return time.monotonic() - t0
        except (OSError, ConnectionError, TimeoutError) as exc:
            last_err = exc
        finally:
            ami.close()
    raise HarnessError(f"Asterisk not FullyBooted within {timeout}s (last AMI error: {last_err})")


# ------------------------------------------------------------------------- instances


def load_instance_meta(name: str, root: Path | None = None) -> dict | None:
    try:
        return json.loads((instance_dir(name, root) / "instance.json").read_text())
    except (OSError, ValueError):
        return None


def _port_free(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel says is free on ``host`` right now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class InstanceSpec:
    name: str
    bind: str = "127.0.0.1"
    ami_port: int = 5038
    http_port: int = 8088
    sip_port: int = 5060
    rtp_start: int = 10000
    rtp_end: int = 20000
    ami_user: str = "thoth"
    ami_secret: str = ""
    ari_user: str = "thoth"
    ari_password: str = ""

    def template_values(self) -> dict[str, str]:
        inside = f"{INSTANCES_IN_ROOT}/{self.name}"
        return {
            "ETC_DIR": f"{inside}/etc-asterisk",
            "RUN_DIR": f"{inside}/run",
            "LOG_DIR": f"{inside}/log",
            "SPOOL_DIR": f"{inside}/spool",
            "DB_DIR": f"{inside}/db",
            "CACHE_DIR": f"{inside}/cache",
            "SYSTEM_NAME": self.name,
            "BIND": self.bind,
            "AMI_PORT": str(self.ami_port),
            "AMI_USER": self.ami_user,
            "AMI_SECRET": self.ami_secret,
            "AMI_PERMIT": "127.0.0.0/255.0.0.0",
            "HTTP_PORT": str(self.http_port),
            "ARI_USER": self.ari_user,
            "ARI_PASSWORD": self.ari_password,
            "SIP_PORT": str(self.sip_port),
            "RTP_START": str(self.rtp_start),
            "RTP_END": str(self.rtp_end),
        }


def instance_info(name: str, root: Path | None = None) -> dict:
    """What `start` prints: the instance metadata plus host paths and live pid."""
    root = root or root_dir()
    meta = load_instance_meta(name, root)
    if meta is None:
        raise HarnessError(f"no instance {name!r} in {instances_dir(root)}")
    idir = instance_dir(name, root)
    pid = _live_pid(name, root)
    return {
        **meta,
        "pid": pid,
        "running": pid is not None,
        "config_dir": str(idir / "etc-asterisk"),
        "log_file": str(idir / "log" / "messages.log"),
        "stdout_file": str(idir / "asterisk.out"),
        "root": str(root),
        "ari_url": f"http://{meta['host']}:{meta['http_port']}/ari",
        "ami": f"{meta['host']}:{meta['ami_port']}",
    }


def _spawn(name: str, root: Path) -> subprocess.Popen:
    idir = instance_dir(name, root)
    conf = f"{INSTANCES_IN_ROOT}/{name}/etc-asterisk/asterisk.conf"
    out = open(idir / "asterisk.out", "ab")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    try:
        # -f: stay in the foreground (we are its parent); -n: no ANSI colours.
        return subprocess.Popen(
            ["chroot", str(root), ASTERISK_BIN, "-f", "-n", "-C", conf],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    finally:
        out.close()


# Popen objects of instances this process started, so stop() can reap them.
_CHILDREN: dict[int, subprocess.Popen] = {}


def start(
    spec: InstanceSpec,
    *,
    fresh: bool = False,
    keep_config: bool = False,
    timeout: float = DEFAULT_READY_TIMEOUT,
    build_if_missing: bool = True,
) -> dict:
    """Start instance ``spec.name`` and wait for FullyBooted; return instance_info().

    fresh: wipe the instance dir first (config, logs, astdb, files written by the service).
    keep_config: do not re-render the base templates (restart keeps every file as is).
    Secrets left empty are taken from the previous instance.json, else generated."""
    if os.geteuid() != 0:
        raise HarnessError("starting an instance needs root (chroot, mount)")
    root = root_dir()
    if not root_is_complete(root):
        if not build_if_missing:
            raise HarnessError(f"no complete chroot at {root}; run `asterisk-sandbox build`")
        build()
    idir = instance_dir(spec.name, root)
    with _lock(f"instance-{spec.name}.lock"):
        if _live_pid(spec.name, root):
            raise HarnessError(
                f"instance {spec.name!r} is already running (pid {_live_pid(spec.name, root)}); stop it first"
            )
        old = load_instance_meta(spec.name, root) or {}
        if fresh and idir.exists():
            shutil.rmtree(idir)
            old = {}
        if keep_config and old:
            # keep_config: the instance's own settings win, including ports and secrets
            spec = InstanceSpec(
                name=spec.name,
                bind=old["host"],
                ami_port=old["ami_port"],
                http_port=old["http_port"],
                sip_port=old["sip_port"],
                rtp_start=old["rtp_start"],
                rtp_end=old["rtp_end"],
                ami_user=old["ami_user"],
                ami_secret=old["ami_secret"],
                ari_user=old["ari_user"],
                ari_password=old["ari_password"],
            )
        spec.ami_secret = spec.ami_secret or old.get("ami_secret") or secrets.token_hex(12)
        spec.ari_password = spec.ari_password or old.get("ari_password") or secrets.token_hex(12)
        busy = [
            f"{what} {spec.bind}:{port}"
            for what, port, kind in (
                ("AMI tcp", spec.ami_port, socket.SOCK_STREAM),
                ("HTTP tcp", spec.http_port, socket.SOCK_STREAM),
                ("SIP udp", spec.sip_port, socket.SOCK_DGRAM),
            )
            if not _port_free(spec.bind, port, kind)
        ]
        if busy:
            raise HarnessError(f"ports in use for instance {spec.name!r}: {', '.join(busy)}")

        # spool/recording, spool/monitor and spool/tmp exist on a packaged Asterisk; ARI
        # bridge recordings fail with "No such file or directory" without them.
        for sub in (
            "etc-asterisk",
            "run",
            "log",
            "spool",
            "spool/recording",
            "spool/monitor",
            "spool/tmp",
            "db",
            "cache",
        ):
            (idir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(idir / "etc-asterisk", 0o777)  # the service (any user) writes here
        (idir / "run" / "asterisk.pid").unlink(missing_ok=True)
        if not (keep_config and (idir / "etc-asterisk" / "asterisk.conf").exists()):
            render_templates(idir / "etc-asterisk", spec.template_values())
        meta = {
            "name": spec.name,
            "host": spec.bind,
            "ami_port": spec.ami_port,
            "ami_user": spec.ami_user,
            "ami_secret": spec.ami_secret,
            "http_port": spec.http_port,
            "ari_user": spec.ari_user,
            "ari_password": spec.ari_password,
            "sip_port": spec.sip_port,
            "rtp_start": spec.rtp_start,
            "rtp_end": spec.rtp_end,
            "config_dir_in_root": f"{INSTANCES_IN_ROOT}/{spec.name}/etc-asterisk",
            "asterisk_version": (read_marker(root) or {}).get("asterisk"),
        }
        _write_meta(idir, meta)

        # mounts.lock: a concurrent `stop` of another instance must not unmount /proc
        # between our mount and our Asterisk being up (it counts running instances).
        with _lock("mounts.lock"):
            return _spawn_and_wait(spec, root, idir, meta, timeout)


def _spawn_and_wait(spec: InstanceSpec, root: Path, idir: Path, meta: dict, timeout: float) -> dict:
    _ensure_proc(root)
    t0 = time.monotonic()
    with open(idir / "asterisk.out", "ab") as fh:
        fh.write(f"\n=== start {time.strftime('%F %T')} ===\n".encode())
    proc = _spawn(spec.name, root)
    _CHILDREN[proc.pid] = proc
    try:
        wait_fully_booted(
            spec.bind, spec.ami_port, spec.ami_user, spec.ami_secret, timeout, alive=lambda: proc.poll() is None
        )
    except HarnessError as exc:
        if proc.poll() is None:
            _terminate(proc.pid, DEFAULT_STOP_TIMEOUT)
        _CHILDREN.pop(proc.pid, None)
        _release_proc(root, locked=True)
        raise HarnessError(
            f"instance {spec.name!r} did not start: {exc}\n"
            f"--- tail of {idir / 'log' / 'messages.log'} ---\n"
            f"{_tail(idir / 'log' / 'messages.log')}\n"
            f"--- tail of {idir / 'asterisk.out'} ---\n{_tail(idir / 'asterisk.out', 20)}"
        ) from None
    meta["pid"] = proc.pid
    meta["ready_seconds"] = round(time.monotonic() - t0, 2)
    _write_meta(idir, meta)
    return instance_info(spec.name, root)


def _write_meta(idir: Path, meta: dict) -> None:
    tmp = idir / ".instance.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, idir / "instance.json")


def _terminate(pid: int, timeout: float) -> str:
    child = _CHILDREN.pop(pid, None)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if child is not None:
        try:
            child.wait(timeout)
            return "terminated"
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout)
            return "killed"
    if _wait_gone(pid, timeout):
        return "terminated"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, timeout):
        raise HarnessError(f"pid {pid} survived SIGKILL for {timeout}s")
    return "killed"


def stop(name: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> dict:
    """SIGTERM the instance (SIGKILL after ``timeout``), wait until it is gone; unmount
    /proc from the root when no instance is left running."""
    root = root_dir()
    with _lock(f"instance-{name}.lock"):
        pid = _live_pid(name, root)
        result = "not-running"
        if pid:
            result = _terminate(pid, timeout)
        _release_proc(root)
        return {"name": name, "pid": pid, "result": result}


def remove(name: str) -> dict:
    stop(name)
    idir = instance_dir(name)
    if idir.exists():
        shutil.rmtree(idir)
    return {"name": name, "removed": True}


def status(name: str | None = None) -> list[dict]:
    root = root_dir()
    names = (
        [name]
        if name
        else (
            sorted(p.name for p in instances_dir(root).iterdir() if p.is_dir()) if instances_dir(root).is_dir() else []
        )
    )
    out = []
    for n in names:
        info = instance_info(n, root)
        out.append(
            {k: info[k] for k in ("name", "running", "pid", "host", "ami_port", "http_port", "sip_port", "config_dir")}
        )
    return out


def cli(name: str, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``asterisk -rx COMMAND`` against the instance's control socket (inside the chroot)."""
    root = root_dir()
    conf = f"{INSTANCES_IN_ROOT}/{name}/etc-asterisk/asterisk.conf"
    if not (root / conf.lstrip("/")).exists():
        raise HarnessError(f"no instance {name!r}")
    return subprocess.run(
        ["chroot", str(root), ASTERISK_BIN, "-C", conf, "-rx", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
    )


def root_info() -> dict:
    return {"cache": str(cache_dir()), "root": str(root_dir()), "complete": root_is_complete(), "marker": read_marker()}


# ------------------------------------------------------------------------------- CLI


def _print(obj) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="asterisk-sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", help="debootstrap (or reuse) the sid chroot with Asterisk")
    b.add_argument(
        "--refresh",
        action="store_true",
        help="debootstrap anew even if the cached root is complete; on failure the last good root stays",
    )

    s = sub.add_parser("start", help="start an instance and wait for FullyBooted")
    s.add_argument("name")
    s.add_argument("--bind", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    s.add_argument("--ami-port", type=int, default=5038)
    s.add_argument("--http-port", type=int, default=8088)
    s.add_argument("--sip-port", type=int, default=5060)
    s.add_argument("--rtp-start", type=int, default=10000)
    s.add_argument("--rtp-end", type=int, default=20000)
    s.add_argument("--ami-user", default="thoth")
    s.add_argument("--ami-secret", default="", help="default: kept from last start, or random")
    s.add_argument("--ari-user", default="thoth")
    s.add_argument("--ari-password", default="", help="default: kept from last start, or random")
    s.add_argument("--fresh", action="store_true", help="wipe the instance dir first")
    s.add_argument(
        "--keep-config", action="store_true", help="do not re-render the base config; reuse ports/secrets of last start"
    )
    s.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT)

    t = sub.add_parser("stop", help="stop an instance (SIGTERM, then SIGKILL)")
    t.add_argument("name")
    t.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT)

    st = sub.add_parser("status", help="JSON lines: instances and whether they run")
    st.add_argument("name", nargs="?")

    c = sub.add_parser("cli", help="run an Asterisk CLI command (asterisk -rx)")
    c.add_argument("name")
    c.add_argument("command")

    r = sub.add_parser("render", help="render config/asterisk/*.conf into DIR")
    r.add_argument("dir", type=Path)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    rm = sub.add_parser("remove", help="stop an instance and delete its directory")
    rm.add_argument("name")

    sub.add_parser("info", help="where the cache/root is and what is in it")

    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            _print(build(refresh=a.refresh))
        elif a.cmd == "start":
            if not SAFE_VALUE.match(a.bind) or not a.bind.startswith("127."):
                raise HarnessError("--bind must be a loopback address (127.x.y.z)")
            spec = InstanceSpec(
                a.name,
                a.bind,
                a.ami_port,
                a.http_port,
                a.sip_port,
                a.rtp_start,
                a.rtp_end,
                a.ami_user,
                a.ami_secret,
                a.ari_user,
                a.ari_password,
            )
            _print(start(spec, fresh=a.fresh, keep_config=a.keep_config, timeout=a.timeout))
        elif a.cmd == "stop":
            _print(stop(a.name, a.timeout))
        elif a.cmd == "status":
            for row in status(a.name):
                _print(row)
        elif a.cmd == "cli":
            res = cli(a.name, a.command)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.returncode
        elif a.cmd == "render":
            values = dict(kv.split("=", 1) for kv in a.set)
            for path in render_templates(a.dir, values):
                print(path)
        elif a.cmd == "remove":
            _print(remove(a.name))
        elif a.cmd == "info":
            _print(root_info())
    except HarnessError as exc:
        print(f"asterisk-sandbox: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
