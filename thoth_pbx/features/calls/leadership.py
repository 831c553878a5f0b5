"""One owner per Asterisk for the Stasis app, elected through PostgreSQL (issue 16; docs/scaling.md
"Stasis ownership").

Asterisk gives an ARI application to one websocket at a time (the newer one wins, the older gets
`ApplicationReplaced`), so two instances connected to one Asterisk would take the app from each
other at every reconnect, and both would re-attach to the same live calls. So the instances on one
PostgreSQL elect an owner per Asterisk: the one holding a session-level advisory lock
(`pg_try_advisory_lock`) on a connection of its own, keyed by the Asterisk's ARI URL and the app
name. Only the owner connects ARI; the others stand by and try again every `stasis_retry_seconds`.
An owner that dies closes its sockets, PostgreSQL ends its session and with it the lock, and a
standby takes over at its next try; its ARI connect runs the resync a restart runs (recovery.py),
so the live calls are re-attached and finished.

No two owners at once, in this order:
- the owner watches its lock connection: it steps down (stops taking calls, closes ARI) the moment
  the connection ends, or when no ping has succeeded for LEASE_TRIES tries, giving its call tasks
  at most STOP_TRIES tries to end; then it closes the connection, which frees the lock;
- PostgreSQL ends a lock session that stays silent for SERVER_IDLE_TRIES tries
  (`idle_session_timeout`, PostgreSQL 14+), longer than both together: an owner cut off from the
  database has stepped down before the server frees its lock for a standby;
- a session the server ends itself (`pg_terminate_backend`, a restart) frees the lock at once; the
  owner hears it at once too (its socket closes) and steps down, and in the milliseconds between,
  Asterisk still sends the events to one websocket only (the newer).

SQLite is one host and one process: the single instance always owns.

PostgreSQL: https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS,
https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-SESSION-TIMEOUT.
Asterisk: https://github.com/asterisk/asterisk/blob/master/rest-api/api-docs/events.json (model
ApplicationReplaced; seen on Asterisk 22: the older websocket gets the event and nothing after).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx.core.tasks import cancel_task

log = logging.getLogger(__name__)

# the owner steps down after this many retry periods without a good ping of its lock connection,
# and gives its call tasks at most STOP_TRIES periods to end before it closes ARI
LEASE_TRIES = 3
STOP_TRIES = 2
# PostgreSQL ends a lock session idle this many retry periods (at least SERVER_IDLE_MIN_S): it must
# stay well above LEASE_TRIES so the owner has stepped down first
SERVER_IDLE_TRIES = 10
SERVER_IDLE_MIN_S = 5.0
LOCK_NAMESPACE = "thoth-pbx stasis owner"


def lock_key(asterisk: str, app: str) -> int:
    """The advisory lock's bigint for one Asterisk (its ARI URL) and app name, the same in every
    instance configured alike."""
    digest = hashlib.sha256(f"{LOCK_NAMESPACE}\0{asterisk}\0{app}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def step_down(
    stop_calls: Callable[[], Awaitable[None]], close_ari: Callable[[], Awaitable[None]], *, within: float
) -> None:
    """Stop the call tasks (the calls live on in Asterisk for the next owner), then close ARI, even
    if the tasks do not end within `within` seconds: a task stuck on a database that no longer
    answers must not keep this instance's ARI open while a standby takes the app."""
    try:
        async with asyncio.timeout(within):
            await stop_calls()
    except TimeoutError:
        log.warning("call tasks still ending; closing ARI anyway", extra={"within_s": within})
    await close_ari()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a connection of its own (never a pooled one: the
    lock lives as long as the session, and a pool would hand the session to someone else)."""

    def __init__(self, dsn: str, key: int, *, timeout: float, server_idle_s: float) -> None:
        self._dsn = dsn
        self.key = key
        self.timeout = timeout
        self.server_idle_s = server_idle_s
        self._conn: Any = None  # asyncpg.Connection (the module is untyped)
        self.lost = asyncio.Event()  # set when the connection ends, whoever ended it

    @classmethod
    def for_engine(cls, engine: AsyncEngine, key: int, *, retry_s: float) -> AdvisoryLock | None:
        """The lock on `engine`'s database; None on SQLite (one instance: no election)."""
        if engine.dialect.name != "postgresql":
            return None
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(dsn, key, timeout=retry_s, server_idle_s=max(SERVER_IDLE_MIN_S, SERVER_IDLE_TRIES * retry_s))

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def try_acquire(self) -> bool:
        """One try: True if this session holds the lock now. Raises on a database error."""
        import asyncpg  # type: ignore[import-untyped]

        if not self.connected:
            await self.release()
            conn = await asyncpg.connect(self._dsn, timeout=max(self.timeout, 2.0))
            lost = asyncio.Event()
            conn.add_termination_listener(lambda *_: lost.set())
            self._conn, self.lost = conn, lost
            try:
                await conn.execute(f"SET idle_session_timeout = {int(self.server_idle_s * 1000)}")
            except asyncpg.PostgresError as exc:  # before 14: a cut-off session lasts until TCP says so
                log.warning("idle_session_timeout not set on the Stasis lock session", extra={"error": str(exc)})
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=self.timeout))

    async def ping(self) -> bool:
        """Is the session (and so the lock) still there? False on any failure or timeout."""
        if not self.connected:
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=self.timeout)
        except Exception:  # asyncpg's errors, OSError, TimeoutError: all mean "not sure any more"
            return False
        return True

    async def release(self) -> None:
        """Close the session: the lock goes with it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await conn.close()
        except Exception:  # the server is away: drop the socket
            conn.terminate()


class StasisOwnership:
    """Holds or waits for one Asterisk's Stasis app. `on_elected` starts taking calls (connects ARI);
    `on_deposed` stops (cancels the call tasks, closes ARI) and must be safe to call twice."""

    def __init__(
        self,
        asterisk: str,
        lock: AdvisoryLock | None,
        on_elected: Callable[[], None],
        on_deposed: Callable[[], Awaitable[None]],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.asterisk = asterisk
        self.retry_s = retry_s
        self._lock = lock
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self.owner = False
        self.since = _now()
        self.error: str | None = None
        self.elections = 0
        self.tries = 0  # attempts to take the lock
        self._active = False  # elected and not yet fully deposed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="stasis-ownership")

    async def stop(self) -> None:
        """Shut down: stop taking calls first, then free the lock for a standby."""
        await cancel_task(self._task)
        self._task = None
        await self._depose("stopping")
        if self._lock is not None:
            await self._lock.release()

    def gate(self, handler: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """`handler` for ARI events, fed only while this instance owns: a step-down in progress
        starts no new call."""

        def gated(event: dict[str, Any]) -> None:
            if event.get("type") == "ApplicationReplaced":  # another websocket took our app
                log.error(
                    "another connection took the Stasis app from this owner: a thoth-pbx on another"
                    " database, or with ari_url spelled differently, is connected to this Asterisk",
                    extra={"asterisk": self.asterisk, "app": event.get("application")},
                )
            if self.owner:
                handler(event)

        return gated

    def status(self) -> dict[str, Any]:
        return {
            "asterisk": self.asterisk,
            "role": "owner" if self.owner else "standby",
            "since": self.since.isoformat(),
            "election": "postgresql advisory lock" if self._lock is not None else "single instance",
            "error": self.error,
        }

    async def _run(self) -> None:
        if self._lock is None:
            self._elect()
            return
        lock = self._lock
        while True:
            self.tries += 1
            try:
                got = await lock.try_acquire()
            except Exception as exc:  # database away: keep standing by
                reason = str(exc) or type(exc).__name__
                if reason != self.error:
                    log.warning("cannot reach the database to take the Stasis app", extra={"error": reason})
                self.error = reason
                await lock.release()
                got = False
            if not got:
                await asyncio.sleep(self.retry_s)  # the next try, not a synchronisation
                continue
            self.error = None
            self._elect()
            reason = await self._hold(lock)
            self.error = reason
            await self._depose(reason)  # before the lock is freed: never two owners
            await lock.release()
            # alive but cut off: the standbys, which kept trying, go first
            await asyncio.sleep(LEASE_TRIES * self.retry_s)

    async def _hold(self, lock: AdvisoryLock) -> str:
        """Ping the lock's session every retry period; return why ownership ended."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            try:
                async with asyncio.timeout(self.retry_s):
                    await lock.lost.wait()
                return "the Stasis lock's database connection ended"
            except TimeoutError:
                pass
            if await lock.ping():
                last_ok = loop.time()
            elif loop.time() - last_ok >= LEASE_TRIES * self.retry_s:
                return "the Stasis lock's database connection stopped answering"

    def _elect(self) -> None:
        self.owner, self._active, self.since = True, True, _now()
        self.elections += 1
        log.info("this instance owns the Stasis app", extra={"asterisk": self.asterisk})
        self._on_elected()

    async def _depose(self, reason: str) -> None:
        if not self._active:
            return
        self.owner, self.since = False, _now()
        log.warning("this instance gives up the Stasis app", extra={"asterisk": self.asterisk, "reason": reason})
        await self._on_deposed()
        self._active = False
