"""Engine, sessions and schema migrations (Alembic, applied on start)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from thoth_pbx.store import sqlite_inline

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_engine(database_url: str) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            _private_file(path)
        inline = _is_inline(url)
        # inline: SQLite never sleeps on a lock on the event loop; the driver retries by awaiting
        engine = create_async_engine(url, connect_args={} if inline else {"timeout": 30})
        event.listen(engine.sync_engine, "connect", _inline_pragmas if inline else _threaded_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _private_file(path: Path) -> None:
    """The SQLite file holds customers' messages: create it 0600 (its -wal and -shm files take
    the same mode from SQLite) and take group/other access away from an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "database file was readable by others; mode set to 0600", extra={"path": str(path), "mode": f"{mode:04o}"}
        )
        for suffix in ("", "-wal", "-shm"):
            sibling = path.with_name(path.name + suffix)
            if sibling.exists():
                sibling.chmod(stat.S_IMODE(sibling.stat().st_mode) & 0o600)


def checkpointer(engine: AsyncEngine) -> sqlite_inline.Checkpointer | None:
    """The WAL checkpointer an inline SQLite engine needs while the service runs."""
    path = sqlite_file(engine.url)
    if _is_inline(engine.url) and path is not None:
        return sqlite_inline.Checkpointer(str(path))
    return None


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _is_inline(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.get_driver_name() == sqlite_inline.DRIVER


def _sqlite_pragmas(dbapi_connection, extra: list[str]) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the admin panel read while the webhook writer commits; foreign keys are
    # off by default in SQLite and our ON DELETE rules rely on them.
    cursor = dbapi_connection.cursor()
    for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON", *extra]:
        cursor.execute(pragma)
    cursor.close()


def _threaded_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    _sqlite_pragmas(dbapi_connection, ["PRAGMA busy_timeout=30000"])


def _inline_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # checkpoints run in Checkpointer's thread, never inside a commit on the event loop
    _sqlite_pragmas(dbapi_connection, ["PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0"])


class StoreSession(Session):
    """Our sessions: `after_commit`/`after_rollback` take per-transaction callbacks cheaply.

    (`event.listen` on a session instance inspects the function's signature every time: a
    third of the CPU of a call's first transaction, measured.)"""


def _run_callbacks(key: str, drop: str) -> Callable[[Session], None]:
    def run(session: Session) -> None:
        session.info.pop(drop, None)
        for callback in session.info.pop(key, ()):
            callback()

    return run


event.listen(StoreSession, "after_commit", _run_callbacks("thoth_after_commit", "thoth_after_rollback"))
event.listen(StoreSession, "after_rollback", _run_callbacks("thoth_after_rollback", "thoth_after_commit"))


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's current transaction commits (never if it rolls back)."""
    _callbacks(session, "thoth_after_commit").append(callback)


def after_rollback(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` if the session's current transaction rolls back."""
    _callbacks(session, "thoth_after_rollback").append(callback)


def _callbacks(session: AsyncSession, key: str) -> list[Callable[[], None]]:
    sync = session.sync_session
    if not isinstance(sync, StoreSession):
        raise TypeError("sessions must come from store.db.session_factory (StoreSession)")
    callbacks: list[Callable[[], None]] = sync.info.setdefault(key, [])
    return callbacks


class InlineSession(AsyncSession):
    """A session on the inline SQLite driver (sqlite_inline.py), closed in place on exit.

    SQLAlchemy closes an `async with` session in a task of its own, shielded, so that a
    cancellation cannot abandon the close half-way; that costs two turns of the event loop per
    session, and a busy loop makes each turn wait for everything else ready to run (an
    operator's message went through four sessions before its send: ~20 ms of p50 at 50
    messages/s). On the inline driver `close()` never suspends (every statement completes
    without leaving the loop's thread), so no cancellation can land inside it and the task
    buys nothing. Other drivers keep SQLAlchemy's shielded close."""

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await self.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    inline = engine.dialect.driver == sqlite_inline.DRIVER
    return async_sessionmaker(
        engine,
        class_=InlineSession if inline else AsyncSession,
        expire_on_commit=False,
        sync_session_class=StoreSession,
    )


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    """Apply migrations up to `revision` (all heads by default) inside one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


def _current(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


# What an error from the driver says about the database, for /healthz and start-up messages.
# SQLite reports these as text; PostgreSQL as SQLSTATE (25006 read_only_sql_transaction,
# 53100 disk_full, XX001 data_corrupted, XX002 index_corrupted).
_STATES = (
    ("read-only", ("readonly", "read-only", "read only"), ("25006",)),
    ("full", ("disk is full", "no space left"), ("53100",)),
    ("corrupt", ("malformed", "not a database", "corrupt"), ("XX001", "XX002")),
)


def error_state(exc: BaseException) -> str:
    """`read-only`, `full`, `corrupt` or `down`."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    code = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    for state, phrases, codes in _STATES:
        if code in codes or any(p in text for p in phrases):
            return state
    return "down"


def describe_error(exc: BaseException) -> str:
    """One line from the driver's error, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:300]


def file_hint(engine: AsyncEngine) -> str:
    """For SQLite, what is wrong with the file's place on disk, if anything (a read-only
    filesystem or directory: SQLite needs to create its -wal and -shm files beside it)."""
    path = sqlite_file(engine.url)
    if path is None:
        return ""
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f" ({path} or its directory is read-only; the service needs to write there)"
    return ""


async def read_file_afresh(engine: AsyncEngine) -> None:
    """SQLite: read the schema through a new connection. The engine's connections keep pages
    cached and go on answering from memory after the file under them was damaged or replaced;
    a new connection reads the header and the schema from disk. No-op on other databases."""
    path = sqlite_file(engine.url)
    if path is None:
        return

    def read() -> None:
        conn = sqlite3.connect(path, timeout=5)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()

    await asyncio.to_thread(read)


def insert_with_conflicts(dialect_name: str, table: Table, what: str) -> Any:
    """The dialect's INSERT that takes ON CONFLICT (PostgreSQL and SQLite both have one);
    `what` names the caller in the error for any other database."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"{what}: unsupported database {dialect_name!r}")
