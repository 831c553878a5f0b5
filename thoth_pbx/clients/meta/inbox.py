"""The durable webhook inbox: a group-commit writer and a dispatcher that routes stored events.

`InboxWriter.store(rows)` returns only after the rows are committed, so the webhook never
answers 200 for something that could still be lost. Deliveries arriving while a commit runs
wait together and go into the next single transaction (group commit): one fsync for many
deliveries, yet every delivery (even one with 1000 updates) is stored whole or not at all.
Duplicates are skipped by the unique `dedup_key` (INSERT ... ON CONFLICT DO NOTHING on both
PostgreSQL and SQLite).

`InboxDispatcher` hands each stored event, in arrival order, to the handlers subscribed to
its kind, together with the phone it belongs to (routing by `metadata.phone_number_id`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, not_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from thoth_pbx.clients.meta.payloads import Model, model_of
from thoth_pbx.clients.meta.tables import WebhookInbox
from thoth_pbx.core.tasks import cancel_task
from thoth_pbx.store.base import table_of
from thoth_pbx.store.db import insert_with_conflicts
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)


def insert_ignoring_duplicates(dialect_name: str) -> Any:
    """`INSERT ... ON CONFLICT (dedup_key) DO NOTHING` in the engine's dialect."""
    insert = insert_with_conflicts(dialect_name, table_of(WebhookInbox), "webhook inbox")
    return insert.on_conflict_do_nothing(index_elements=["dedup_key"])


# pg_advisory_xact_lock key: one instance at a time dispatches the shared inbox (issue 16)
INBOX_DISPATCH_LOCK = 0x7468_6F74_6801  # "thoth" + 1
CHECKPOINT_EVERY_ROWS = 2000  # SQLite: WAL checkpoint beside the writer after this many rows
WAL_RESTART_FRAMES = 16384  # ~64 MB of 4 KiB pages: then rewind the WAL even if it stalls a commit


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    done: asyncio.Future[None]


class InboxWriter:
    """Group-commit writer; `store()` resolves after COMMIT (or raises, nothing stored)."""

    def __init__(
        self, engine: AsyncEngine, *, max_rows: int = 5000, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._insert = insert_ignoring_duplicates(engine.dialect.name)
        self._max_rows = max_rows
        self._on_commit = on_commit
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None  # kept open: no pool round trip per batch
        self._sqlite = engine.dialect.name == "sqlite"
        self._checkpoint: asyncio.Task[None] | None = None
        self._since_checkpoint = 0
        self._wal_frames = 0  # WAL size (pages) seen by the last checkpoint
        self.commits = 0
        self.rows_written = 0

    async def store(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-inbox-writer")
        pending = _Pending(rows, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        await pending.done

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
            self._checkpoint = None
        await self._discard_connection()
        while not self._queue.empty():  # nobody may be left waiting forever
            item = self._queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(RuntimeError("webhook inbox writer stopped"))

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0].rows)
            while not self._queue.empty() and count < self._max_rows:
                item = self._queue.get_nowait()
                batch.append(item)
                count += len(item.rows)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._write([row for item in batch for row in item.rows])
        except asyncio.CancelledError:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(RuntimeError("webhook inbox writer stopped"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                log.error("webhook inbox write failed", extra={"error": f"{type(exc).__name__}: {exc}"[:500]})
                _settle(batch[0], exc)
                return
            # One bad delivery must not fail the others: retry each on its own.
            for item in batch:
                await self._commit_batch([item])
            return
        for item in batch:
            _settle(item, None)
        if self._on_commit is not None:
            self._on_commit()

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._conn is None:
            self._conn = await self._engine.connect()
            if self._sqlite:
                # SQLite would checkpoint inside whichever commit crosses the WAL limit, and a
                # checkpoint waits for the disk: tail latency. This connection never does;
                # `_checkpoint_soon` runs them beside it on another connection.
                await self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                await self._conn.commit()
        try:
            async with self._conn.begin():
                await self._conn.execute(self._insert, rows)
        except Exception:
            await self._discard_connection()  # a broken connection is not reused
            raise
        self.commits += 1
        self.rows_written += len(rows)
        if self._sqlite:
            self._checkpoint_soon(len(rows))

    def _checkpoint_soon(self, rows: int) -> None:
        self._since_checkpoint += rows
        if self._since_checkpoint < CHECKPOINT_EVERY_ROWS or (self._checkpoint and not self._checkpoint.done()):
            return
        self._since_checkpoint = 0
        self._checkpoint = asyncio.get_running_loop().create_task(
            self._run_checkpoint(), name="webhook-inbox-checkpoint"
        )

    async def _run_checkpoint(self) -> None:
        # PASSIVE never blocks the writer. Under sustained load the WAL cannot rewind while
        # frames keep arriving, so past a bound one RESTART waits for a gap and rewinds it.
        mode = "RESTART" if self._wal_frames > WAL_RESTART_FRAMES else "PASSIVE"
        try:
            async with self._engine.connect() as conn:
                row: Any = (await conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")).first()
                await conn.commit()
            self._wal_frames = int(row[1]) if row is not None and row[1] is not None else 0
        except Exception:  # the next one retries; SQLite's own limit still applies to other connections
            log.warning("webhook inbox WAL checkpoint failed", exc_info=True)

    async def _discard_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken; the pool drops it
                log.debug("closing the inbox writer connection failed", exc_info=True)


def _settle(item: _Pending, exc: BaseException | None) -> None:
    if item.done.done():
        return
    if exc is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(exc)


# ------------------------------------------------------------------ dispatch


@dataclass(frozen=True)
class RoutedPhone:
    id: int
    number: str
    phone_number_id: str
    waba_account_id: int
    app_instance_id: int | None


@dataclass(frozen=True)
class InboxItem:
    """One stored event as handlers see it: typed model plus the phone it was routed to."""

    id: int
    kind: str
    field: str
    model: Model
    payload: dict[str, Any]
    phone: RoutedPhone | None  # None: the phone number id is not configured (yet)
    waba_account_id: int | None
    received_at: dt.datetime


Handler = Callable[[InboxItem], Awaitable[None]]
BATCH_LINGER_S = 0.05  # how long a batch subscriber's event waits for others to go with it
# all of a pass's events of a kind at once (one transaction for many of Meta's status webhooks)
BatchHandler = Callable[[list[InboxItem]], Awaitable[None]]
# phone number ids -> the phones configured for them (the directory answers; this module knows no tables but its own)
Router = Callable[[AsyncSession, set[str]], Awaitable[dict[str, RoutedPhone]]]


class InboxDispatcher:
    """Delivers pending inbox rows to subscribers in id order; marks each row processed.

    A handler that raises gets its error recorded on the row (`error`), the row counts as
    processed and the others go on; handlers should only write to the database/outbox.
    With no subscriber at all the dispatcher leaves rows pending for a consumer to come.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        route: Router,
        *,
        batch: int = 200,
        sweep_seconds: float = 5.0,
        linger_seconds: float = BATCH_LINGER_S,
    ) -> None:
        self._sessions = sessions
        self._linger = dt.timedelta(seconds=linger_seconds)
        self._timer: asyncio.TimerHandle | None = None  # the next pass for lingering batch events
        self._route = route
        self._batch = batch
        self._sweep = sweep_seconds
        self._handlers: list[tuple[str, Handler]] = []
        self._batch_handlers: list[tuple[str, BatchHandler]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set when a pass found nothing more to do
        self._task: asyncio.Task[None] | None = None
        self._unhandled: set[str] = set()
        bind = sessions.kw.get("bind")
        self._shared = bind is not None and bind.dialect.name == "postgresql"

    def subscribe(self, kind_prefix: str, handler: Handler) -> None:
        """`kind_prefix` "call." gets call.connect, call.terminate, ...; "" gets everything."""
        self._handlers.append((kind_prefix, handler))
        self.notify()

    def subscribe_batch(self, kind_prefix: str, handler: BatchHandler) -> None:
        """`handler` gets the events of `kind_prefix` together, in arrival order: each waits
        `linger_seconds` after it arrived (so a busy second's many become a few calls), then
        goes with the others a pass finds, after the pass's other events (for events that need
        no order against other kinds). If it raises, each of its events records the error."""
        self._batch_handlers.append((kind_prefix, handler))
        self.notify()

    def notify(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        """Until every row stored so far has been dispatched (for tests and shutdown)."""
        await self._idle.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-inbox-dispatcher")

    async def stop(self) -> None:
        await cancel_task(self._task)
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _run(self) -> None:
        while True:
            await self._next_pass()
            self._wake.clear()
            try:
                while await self.run_once() == self._batch:
                    pass
            except Exception:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # stop() cancelled us mid-transaction and the driver's rollback turned the
                    # CancelledError into its own error: stop as asked, or stop() waits forever
                    raise asyncio.CancelledError from None
                log.exception("webhook inbox dispatch failed; retrying on the next delivery")
                await asyncio.sleep(1)  # back off a failing database, not a synchronisation
                self._wake.set()
            if not self._wake.is_set() and self._timer is None:
                self._idle.set()

    async def _next_pass(self) -> None:
        """On the next stored delivery; on PostgreSQL also every `sweep_seconds`: an instance
        killed between storing a delivery and dispatching it leaves the row pending, and only
        the instances still running can dispatch it (a schedule, not a synchronisation)."""
        if not self._shared:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(self._sweep):
                await self._wake.wait()
        except TimeoutError:
            self._idle.clear()  # a pass is under way: wait_idle() waits for it, as after notify()

    async def run_once(self) -> int:
        """Dispatch up to one batch of pending rows; returns how many were handled."""
        if not self._handlers and not self._batch_handlers:
            return 0
        if not self._shared:
            return await self._dispatch_batch()
        # PostgreSQL, several instances share the inbox: one dispatches at a time (so the events
        # reach the outbox in arrival order, once), the others wait their turn and then find
        # what is left, their own deliveries included
        async with self._sessions() as turn, turn.begin():
            await turn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INBOX_DISPATCH_LOCK})
            return await self._dispatch_batch()

    async def _dispatch_batch(self) -> int:
        pending = WebhookInbox.processed_at.is_(None)
        async with self._sessions() as session:
            due: ColumnElement[bool] = pending
            if self._batch_handlers:
                # the lingering events all go once the oldest has waited long enough
                lingering = or_(*(WebhookInbox.kind.startswith(prefix) for prefix, _ in self._batch_handlers))
                # (aware on every database: the column's UtcDateTime type reads it, min() included)
                oldest = await session.scalar(select(func.min(WebhookInbox.received_at)).where(pending, lingering))
                if oldest is not None and oldest > utcnow() - self._linger:
                    due = and_(pending, not_(lingering))
                    self._pass_at(oldest)
            rows = (
                await session.scalars(select(WebhookInbox).where(due).order_by(WebhookInbox.id).limit(self._batch))
            ).all()
            if not rows:
                return 0
            phones = await self._route(session, {r.phone_number_id for r in rows if r.phone_number_id})
        results: dict[int, dict[str, Any]] = {}
        batched: list[list[InboxItem]] = [[] for _ in self._batch_handlers]
        for row in rows:
            item = InboxItem(
                row.id,
                row.kind,
                row.field,
                model_of(row.kind, row.payload),
                row.payload,
                phones.get(row.phone_number_id or ""),
                row.waba_account_id,
                row.received_at,
            )
            matched = False
            for (prefix, _), items in zip(self._batch_handlers, batched, strict=True):
                if item.kind.startswith(prefix):
                    items.append(item)
                    matched = True
            results[row.id] = {"_id": row.id, "_at": utcnow(), "_error": await self._deliver(item, batched=matched)}
            # a batch is one loop turn without this: an operator's message or a call arriving
            # meanwhile would wait for the whole batch instead of one delivery
            await asyncio.sleep(0)
        for (prefix, handler), items in zip(self._batch_handlers, batched, strict=True):
            error = await self._call(handler, handler(items), prefix) if items else None
            if error is None:
                continue
            for item in items:
                known = results[item.id]["_error"]
                results[item.id]["_error"] = f"{known}\n{error}" if known else error
        async with self._sessions() as session, session.begin():
            conn = await session.connection()
            await conn.execute(
                update(WebhookInbox)
                .where(WebhookInbox.id == bindparam("_id"))
                .values(processed_at=bindparam("_at"), error=bindparam("_error")),
                list(results.values()),
            )
        return len(rows)

    def _pass_at(self, received: dt.datetime) -> None:
        """A pass once the oldest lingering event (received then) is due."""
        if self._timer is not None:
            return
        delay = max(0.0, (received + self._linger - utcnow()).total_seconds()) + 0.001
        self._timer = asyncio.get_running_loop().call_later(delay, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        self.notify()

    async def _deliver(self, item: InboxItem, *, batched: bool = False) -> str | None:
        handlers = [h for prefix, h in self._handlers if item.kind.startswith(prefix)]
        if not handlers and not batched and item.kind not in self._unhandled:
            self._unhandled.add(item.kind)
            log.info("webhook events of this kind have no handler", extra={"kind": item.kind})
        errors = []
        for handler in handlers:
            error = await self._call(handler, handler(item), item.kind, inbox_id=item.id)
            if error is not None:
                errors.append(error)
        return "\n".join(errors) or None

    async def _call(
        self, handler: object, call: Awaitable[None], kind: str, *, inbox_id: int | None = None
    ) -> str | None:
        """Await one handler's `call`; its failure as the text the row records (None: it went well)."""
        try:
            await call
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # stop() cancelled us inside a handler's transaction and the driver's rollback
                # turned the CancelledError into its own error: stop, or stop() waits forever
                # (the row stays pending and is handled after the next start)
                raise asyncio.CancelledError from None
            log.exception("webhook handler failed", extra={"kind": kind, "inbox_id": inbox_id})
            return f"{getattr(handler, '__qualname__', handler)}: {type(exc).__name__}: {exc}"[:1000]
        return None
