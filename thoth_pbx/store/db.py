"""Engine, sessions and schema migrations (Alembic, applied on start)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from thoth_pbx.store import sqlite_inline

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_engine(database_url: str) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        inline = _is_inline(url)
        # inline: SQLite never sleeps on a lock on the event loop; the driver retries by awaiting
        engine = create_async_engine(url, connect_args={} if inline else {"timeout": 30})
        event.listen(engine.sync_engine, "connect", _inline_pragmas if inline else _threaded_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def checkpointer(engine: AsyncEngine) -> sqlite_inline.Checkpointer | None:
    """The WAL checkpointer an inline SQLite engine needs while the service runs."""
    url = engine.url
    if _is_inline(url) and url.database and url.database != ":memory:":
        return sqlite_inline.Checkpointer(url.database)
    return None


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
    return sync.info.setdefault(key, [])


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=StoreSession)


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


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
