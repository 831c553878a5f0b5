"""A change counter for tables that in-memory caches copy (phones, portals, users).

Every committed INSERT/UPDATE/DELETE on a watched table, by any code path of this
process that uses the engine (ORM, Core, admin API, installer, user sync), bumps
`generation`; a cache compares the generation it loaded under with the current one.

Several instances on one PostgreSQL (docs/scaling.md): such a transaction also sends
`NOTIFY thoth_changes, '<table>,...'` (PostgreSQL delivers it when, and only if, the
transaction commits), and each instance's `ChangeListener` LISTENs on its own connection and
bumps the counters of the tables named, so a phone changed through one instance is seen by
the others at once. While the listener is disconnected nothing is missed for long: it bumps
every counter when it connects again, and caches also expire by age. SQLite is one host and
one process: writes by another process there (a CLI command) are seen when caches expire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx.core.tasks import cancel_task

_DML = re.compile(r'^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)
_FLAG = "thoth_changed_tables"
_TOLD = "thoth_notified_tables"
CHANNEL = "thoth_changes"
RECONNECT_S = 2.0
log = logging.getLogger(__name__)
# the TableChanges of each engine, for the listener to reach (weak: an engine disposed and
# dropped by a test takes its watchers with it)
_WATCHERS: weakref.WeakKeyDictionary[Any, list[TableChanges]] = weakref.WeakKeyDictionary()


class TableChanges:
    def __init__(self, engine: AsyncEngine, tables: Iterable[str]) -> None:
        self.tables = frozenset(t.lower() for t in tables)
        self.generation = 0
        # this watcher's own mark on a connection: several watch one engine, each its own tables
        # (a shared mark let a customer insert expire the call contexts: 2 reloads per call)
        self._flag = f"{_FLAG}:{id(self)}"
        sync = engine.sync_engine
        _WATCHERS.setdefault(sync, []).append(self)
        event.listen(sync, "after_cursor_execute", self._executed)
        event.listen(sync, "commit", self._committing)
        event.listen(sync, "rollback", self._rolled_back)
        event.listen(sync.pool, "checkin", self._checked_in)

    def _executed(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        match = _DML.match(statement)
        if match and match.group(1).lower() in self.tables:
            table = match.group(1).lower()
            told: set[str] = conn.info.setdefault(_TOLD, set())
            if conn.dialect.name == "postgresql" and table not in told:
                # queued by PostgreSQL with the transaction: the others hear of it only if it commits.
                # Its own cursor: the statement's cursor still holds what the caller will fetch.
                notify = conn.connection.cursor()
                try:
                    notify.execute("SELECT pg_notify($1, $2)", (CHANNEL, table))
                finally:
                    notify.close()
                told.add(table)
            conn.info[self._flag] = True

    def remote(self, tables: Iterable[str]) -> None:
        """Another instance committed a change to `tables` (ChangeListener)."""
        if self.tables.intersection(t.lower() for t in tables):
            self.generation += 1

    def _committing(self, conn: Any) -> None:
        # Bumped before the commit lands and again when the connection goes back to the
        # pool (after it landed): a load that ran in between cannot keep a stale copy.
        conn.info.pop(_TOLD, None)
        if conn.info.get(self._flag):
            self.generation += 1

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop(self._flag, None)
        conn.info.pop(_TOLD, None)

    def _checked_in(self, _dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info.pop(_TOLD, None)
            if record.info.pop(self._flag, None):
                self.generation += 1


class ChangeListener:
    """LISTENs for other instances' changes on a connection of its own and hands them to every
    TableChanges of this engine (PostgreSQL only; `for_engine` gives None elsewhere)."""

    def __init__(self, engine: AsyncEngine, dsn: str) -> None:
        self._engine = engine.sync_engine
        self._dsn = dsn
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> ChangeListener | None:
        if engine.dialect.name != "postgresql":
            return None
        url = engine.url.set(drivername="postgresql")
        return cls(engine, url.render_as_string(hide_password=False))

    @property
    def watchers(self) -> list[TableChanges]:
        return _WATCHERS.get(self._engine, [])

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        tables = payload.split(",")
        for watcher in self.watchers:
            watcher.remote(tables)

    def _everything(self) -> None:
        for watcher in self.watchers:
            watcher.generation += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="table-change-listener")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None

    async def _run(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(CHANNEL, self._heard)
                self._everything()  # whatever changed while we were not listening
                self.connected.set()
                closed = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set_event, closed))
                await closed.wait()
                log.warning("the table-change listener lost its database connection; reconnecting")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("the table-change listener cannot connect; retrying", extra={"error": str(exc)})
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(RECONNECT_S)  # a back-off, not a synchronisation


def _set_event(event: asyncio.Event, *_args: Any) -> None:
    event.set()
