"""SQLite for SQLAlchemy's asyncio engine without a thread per connection (`sqlite+thoth://`).

Why (docs/decisions.md D7): aiosqlite runs every connection in its own thread and every
cursor operation is a round trip to it (cursor, execute, fetch, close: 3-4 per statement,
each two thread wake-ups). On a box busy with Asterisk's media threads each wake-up waits
for a core, and a call's two-row transaction took 6-15 ms instead of 0.3 ms of work. Here
the statements run on the event loop thread itself; SQLite's work per statement is tens
of microseconds (WAL, synchronous=NORMAL: a commit writes the log without fsync).

The one thing that must never happen on the event loop is SQLite's own busy wait: a
connection waiting for a write lock held by another connection *of this same loop* would
wait forever. So these connections use busy_timeout=0 and a SQLITE_BUSY is retried by
awaiting (the lock holder runs meanwhile) until `busy_timeout_s`. SQLITE_BUSY_SNAPSHOT
(a read transaction that cannot become a write one) is raised at once, as SQLite does.
Checkpoints would fsync inside some commit; `wal_autocheckpoint` is off and
`Checkpointer` runs them in a worker thread instead.

This module adapts `sqlite3` to the small aiosqlite-shaped API that SQLAlchemy's
aiosqlite dialect drives; everything else (SQL compilation, types, pooling) is that
dialect's.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util.concurrency import await_

log = logging.getLogger(__name__)

DRIVER = "thoth"
SQLITE_BUSY = 5
BUSY_TIMEOUT_S = 30.0
_FIRST_RETRY_S = 0.0005
_MAX_RETRY_S = 0.05


async def _retry_busy(fn: Any, *args: Any, timeout: float = BUSY_TIMEOUT_S) -> Any:
    """Run a sqlite3 call; while the database is locked by someone else, await and retry."""
    delay = _FIRST_RETRY_S
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_RETRY_S)


class Cursor:
    """aiosqlite.Cursor's shape over a sqlite3 cursor; every method completes without a thread."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        if parameters is None:
            await _retry_busy(self._cursor.execute, sql)
        else:
            await _retry_busy(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        await _retry_busy(self._cursor.executemany, sql, list(parameters))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class Connection:
    """aiosqlite.Connection's shape over a sqlite3 connection used from the event loop thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn

    @property
    def _connection(self) -> sqlite3.Connection | None:  # what SQLAlchemy's adapter checks
        return self._conn

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    def cursor(self) -> Cursor:
        # aiosqlite returns an async context manager; SQLAlchemy only enters it (__aenter__)
        return Cursor(self._live().cursor())

    def insert_now(self, sql: str, parameters: Sequence[Any]) -> int | None:
        """One `INSERT ... RETURNING id` without leaving the caller's greenlet; None when the
        database is locked (the caller then takes the awaiting path)."""
        cursor = self._live().cursor()
        try:
            cursor.execute(sql, parameters)
            row = cursor.fetchone()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == SQLITE_BUSY:
                return None
            raise
        finally:
            cursor.close()
        return int(row[0])

    async def commit(self) -> None:
        await _retry_busy(self._live().commit)

    async def rollback(self) -> None:
        self._live().rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._live().create_function(*args, **kw)

    @property
    def isolation_level(self) -> str | None:
        return self._live().isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._live().isolation_level = value  # type: ignore[assignment]  # SQLAlchemy sets the values sqlite3 takes


_Connection = Connection  # the name `Connection` is also an attribute of _Module below


class _Module:
    """The `aiosqlite` module as SQLAlchemy's dialect uses it."""

    Connection = Connection
    DatabaseError = sqlite3.DatabaseError
    Error = sqlite3.Error
    IntegrityError = sqlite3.IntegrityError
    NotSupportedError = sqlite3.NotSupportedError
    OperationalError = sqlite3.OperationalError
    ProgrammingError = sqlite3.ProgrammingError
    sqlite_version = sqlite3.sqlite_version
    sqlite_version_info = sqlite3.sqlite_version_info
    __version__ = sqlite3.sqlite_version

    @staticmethod
    async def _open(*args: Any, **kw: Any) -> _Connection:
        kw.pop("check_same_thread", None)
        kw["timeout"] = 0  # never SQLite's sleeping busy handler on the event loop (see above)
        return Connection(sqlite3.connect(*args, check_same_thread=False, **kw))  # type: ignore[call-overload]

    def connect(self, *args: Any, **kw: Any) -> Any:
        return self._open(*args, **kw)


class InlineConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.isolation_level = value


class InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> InlineConnection:
        kw.pop("async_creator_fn", None)
        return InlineConnection(self, await_(self.aiosqlite.connect(*arg, **kw)))


class SQLiteDialect_inline(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> InlineDBAPI:
        return InlineDBAPI(_Module(), sqlite3)  # type: ignore[arg-type]  # a module-like object, as aiosqlite is

    def retrieve_dbapi_version(self, dbapi: Any) -> Any:
        return tuple(sqlite3.sqlite_version_info)


dialect = SQLiteDialect_inline
registry.register(f"sqlite.{DRIVER}", __name__, "SQLiteDialect_inline")


class Checkpointer:
    """Moves the WAL into the database file from a worker thread, so no commit on the event
    loop ever pays for a checkpoint's fsync (`wal_autocheckpoint` is off on our connections)."""

    def __init__(self, path: str, *, interval_s: float = 2.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="sqlite-checkpointer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.to_thread(self.checkpoint)
        except sqlite3.Error as exc:  # a damaged file must not turn a clean stop into a crash
            log.warning("sqlite checkpoint at stop failed", extra={"error": str(exc)})

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:
                log.warning("sqlite checkpoint failed; retrying later", extra={"error": str(exc)})

    def checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, timeout=5)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        finally:
            conn.close()
