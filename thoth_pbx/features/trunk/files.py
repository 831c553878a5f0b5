"""Our files in the Asterisk config dir: plan the change, write atomically, restore.

Two install modes decide which admin-owned file pulls ours in with one `#tryinclude`
line: `plain` uses pjsip.conf / extensions.conf, `freepbx` uses pjsip_custom.conf /
extensions_custom.conf (FreePBX regenerates the others; the *_custom files survive and
are created here when missing). Admin files are only ever appended to, so their content
stays byte for byte; ours are replaced whole by rename, with the previous version kept
next to them as `<name>.prev`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import fcntl
import hashlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from thoth_pbx.features.trunk.conffile import mask_secrets

INCLUDERS = {
    "plain": {"pjsip_thoth.conf": "pjsip.conf", "extensions_thoth.conf": "extensions.conf"},
    "freepbx": {"pjsip_thoth.conf": "pjsip_custom.conf", "extensions_thoth.conf": "extensions_custom.conf"},
}
PREVIOUS_SUFFIX = ".prev"
OUR_FILE_MODE = 0o640  # holds the numbers' SIP passwords
NEW_ADMIN_FILE_MODE = 0o644


@dataclass(frozen=True)
class FileChange:
    name: str  # file name inside the config dir
    old: bytes | None  # None: the file does not exist yet
    new: bytes
    ours: bool  # our generated file (replaced whole) or an admin file (appended to)


def include_line(name: str) -> str:
    return f"#tryinclude {name}"


def has_include(text: str, name: str) -> bool:
    pattern = re.compile(rf"^[ \t]*#(?:try)?include[ \t]+[\"<]?{re.escape(name)}[\">]?[ \t]*(?:;.*)?$", re.MULTILINE)
    return bool(pattern.search(text))


def with_include(old: bytes | None, name: str) -> bytes:
    """`old` plus our include line at the end (unchanged if already there)."""
    text = (old or b"").decode("utf-8", errors="surrogateescape")
    if has_include(text, name):
        return old or b""
    prefix = b"" if not old or old.endswith(b"\n") else b"\n"
    return (old or b"") + prefix + (include_line(name) + "\n").encode()


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def plan(config_dir: Path, mode: str, files: Mapping[str, str]) -> list[FileChange]:
    """What must change on disk so Asterisk loads `files` (empty list: nothing)."""
    includers = INCLUDERS[mode]
    changes: list[FileChange] = []
    for name, text in files.items():
        old = read(config_dir / name)
        new = text.encode("utf-8")
        if old != new:
            changes.append(FileChange(name, old, new, ours=True))
        includer = includers.get(name)
        if includer is not None:
            current = read(config_dir / includer)
            wanted = with_include(current, name)
            if wanted != current:
                changes.append(FileChange(includer, current, wanted, ours=False))
    return changes


def diff(changes: list[FileChange]) -> str:
    """Unified diff of all changes, secrets masked (it is stored and shown)."""
    out: list[str] = []
    for change in changes:
        old = mask_secrets((change.old or b"").decode("utf-8", "replace")).splitlines(keepends=True)
        new = mask_secrets(change.new.decode("utf-8", "replace")).splitlines(keepends=True)
        before = f"a/{change.name}" if change.old is not None else "/dev/null"
        out.extend(difflib.unified_diff(old, new, before, f"b/{change.name}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _owner(config_dir: Path) -> tuple[int, int] | None:
    """Files we create get the config dir's owner/group, so Asterisk can read them."""
    if os.geteuid() != 0:
        return None
    st = config_dir.stat()
    return st.st_uid, st.st_gid


def atomic_write(path: Path, data: bytes, *, default_mode: int, keep_previous: bool) -> None:
    """Replace `path` by `data` via temp file + fsync + rename; keep the old one as .prev."""
    tmp = path.with_name(f".{path.name}.thoth-tmp")
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    except FileNotFoundError:
        st = None
        mode, owner = default_mode, _owner(path.parent)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)
    if keep_previous and st is not None:
        prev_tmp = path.with_name(f".{path.name}{PREVIOUS_SUFFIX}.thoth-tmp")
        with contextlib.suppress(FileNotFoundError):
            prev_tmp.unlink()
        os.link(path, prev_tmp)
        os.replace(prev_tmp, path.with_name(path.name + PREVIOUS_SUFFIX))
    os.replace(tmp, path)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(config_dir: Path, changes: list[FileChange]) -> None:
    for change in changes:
        atomic_write(
            config_dir / change.name,
            change.new,
            default_mode=OUR_FILE_MODE if change.ours else NEW_ADMIN_FILE_MODE,
            keep_previous=change.ours,
        )
    fsync_dir(config_dir)


def restore_all(config_dir: Path, changes: list[FileChange]) -> None:
    """Put every changed file back as it was before `write_all` (removing new ones)."""
    for change in changes:
        path = config_dir / change.name
        if change.old is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            atomic_write(path, change.old, default_mode=NEW_ADMIN_FILE_MODE, keep_previous=False)
    fsync_dir(config_dir)


@contextlib.asynccontextmanager
async def dir_lock(config_dir: Path) -> AsyncIterator[None]:
    """One apply at a time per config dir, across processes (service and CLI)."""
    fd = os.open(config_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_texts(config_dir: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Our files as text ("" for a missing one), e.g. to verify what is on disk."""
    return {name: (read(config_dir / name) or b"").decode("utf-8", "replace") for name in names}


def disk_hashes(config_dir: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: sha256(read(config_dir / name)) for name in names}
