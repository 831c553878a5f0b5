"""Durable jobs: every remote call that records a fact is stored with the fact and delivered once.

How to use it (call flow, Bitrix installer, message bridges)::

    outbox = Outbox(sessions)                                    # app.py, once
    outbox.register("bitrix.call.register", handler)             # kind -> coroutine

    async with sessions() as session, session.begin():
        session.add(call)                                        # the fact ...
        await outbox.enqueue(session, "bitrix.call.register",    # ... and its job, one transaction
                             instance_id, chain=f"bitrix-call:{instance_id}:{linkedid}",
                             payload={...})                      # JSON, never secrets
    # on commit the worker is woken and runs the job at once: no polling delay;
    # run_now=True (a new chain's first job): the commit itself starts it, no claim at all;
    # outbox.watch(session, job_id) -> future of its result (call routing needs register's)
    # outbox.started(session, job_id) -> future: the job has run up to its first wait (a burst
    #   of calls lets each register leave before the next call is stored)
    # outbox.defer_to(quiet): outcomes are stored once `await quiet()` returns (bounded): a
    #   burst of calls is announced before the box's CPU goes to marking registers done

    async def handler(job: Job) -> dict | None:                  # the return value is stored as the result
        call_id = job.previous("bitrix.call.register")["CALL_ID"]  # results earlier in the chain
        ...
        raise Retry("portal down", after=30, maybe_delivered=False)  # try again later
        raise Fail("ERROR_CORE: Unknown TYPE")                       # give up; admin sees it, may retry

`register(kind, handler, on_done=...)` also takes a hook `on_done(session, row, result)` run
in the transaction that marks the job done (e.g. to copy a CALL_ID onto the call row).

Guarantees:
- Nothing is lost: a job exists iff its fact was committed; it stays until done or failed
  (failed jobs are listed by `GET /api/admin/outbox` and retried by an admin).
- Order: jobs sharing a `chain` run one at a time in `id` order; a job waits while an
  earlier one of its chain is pending, running or failed. Jobs without a chain run in parallel.
- Retries: `Retry` and unexpected errors come back with exponential backoff (capped);
  unexpected errors give up after `max_bug_attempts`. Transient remote failures never give up.
- Once: a job marked done is never run again. The window between the remote reply and
  the "done" commit (a crash, a kill -9) is closed by the handlers: after such a crash
  the job runs again with `job.maybe_delivered` set, and each handler knows how its remote
  side answers a repeat (docs/bitrix.md: register is de-duplicated by Bitrix, finish
  answers "Call is not found", attachRecord replaces).
- Several instances (PostgreSQL): a claim is a row lock that skips other instances' claims
  (`FOR UPDATE SKIP LOCKED`) and a lease (`claimed_by`, `lease_until` in database time) that the
  claiming instance renews while its jobs run. An instance that dies, or cannot renew for a
  whole lease, loses its jobs: another instance puts them back (flagged `maybe_delivered`, as a
  restart does) and runs them; an instance that could not renew stops claiming and drops its
  running jobs, and an outcome is stored only by the instance that still holds the claim.
  Chains stay in order across instances: a job is claimable only when every earlier job of its
  chain is done, and `enqueue_in_order` serialises producers of one chain with a transaction
  advisory lock. SQLite is one process: claims are plain, and a start recovers every running job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from thoth_pbx.core.validation import FieldError
from thoth_pbx.outbox.admin import describe
from thoth_pbx.outbox.jobs import Fail, Handler, Job, JobKind, OnDone, Retry
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.store import db
from thoth_pbx.store.base import table_of
from thoth_pbx.store.fast_insert import insert_returning_id
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

JOBS = table_of(OutboxJob)
# the longest urgent work (`defer_to`) may hold back storing outcomes
URGENT_MAX_S = 1.0


@dataclass
class OutboxStats:
    done: int = 0
    retried: int = 0
    failed: int = 0
    claims: int = 0  # claim transactions
    empty_claims: int = 0  # ... that found nothing to run
    handed: int = 0  # successors claimed by the commit that stored their predecessor done


@dataclass
class _Committed:
    """Jobs one transaction enqueued: started by its commit, or left for the worker to claim."""

    started: list[Job] = field(default_factory=list)
    pending_chains: list[str | None] = field(default_factory=list)
    pending_ids: list[int] = field(default_factory=list)
    watched: list[int] = field(default_factory=list)
    starting: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    def chains(self) -> set[str | None]:
        return {job.chain for job in self.started} | set(self.pending_chains)


@dataclass
class _Outcome:
    status: str  # done | retry | failed
    result: dict[str, Any] | None = None
    error: str | None = None
    after: float | None = None
    maybe_delivered: bool = False


class Outbox:
    """The job table's producer API (register, enqueue, watch) and its worker (start/stop).

    They share the chain bookkeeping that lets a commit start its own job at once (run_now)
    and wake the worker only when a claim can find something, so they stay one class; the
    job model and verdicts are jobs.py, the admin listing admin.py."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_inflight: int = 1000,
        poll_interval: float = 1.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        max_bug_attempts: int = 5,
        stop_grace: float = 5.0,
        name: str | None = None,
        lease: float = 30.0,
    ) -> None:
        self._sessions = sessions
        # the claiming instance, stored on its claims and shown in logs and the admin listing
        self.name = name or default_instance_name()
        self.lease = lease
        bind = sessions.kw.get("bind")
        # several instances may share the database: claims lock rows and expire
        self.shared = bind is not None and bind.dialect.name == "postgresql"
        self._renewed = time.monotonic()  # last time this instance's leases were known to hold
        self._heart: asyncio.Task[None] | None = None
        self.max_inflight = max_inflight
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_bug_attempts = max_bug_attempts
        self.stop_grace = stop_grace
        self._kinds: dict[str, JobKind] = {}
        self._inflight: dict[int, asyncio.Task[None]] = {}
        # chain -> jobs this process committed there and has not claimed yet: when a job of
        # the chain finishes, only these make a new claim worthwhile (no empty claims)
        self._backlog: dict[str, int] = {}
        self._foreign: set[str] = set()
        # ids of the pending jobs behind `_backlog` (a stored job of the same chain is not one)
        self._own_pending: set[int] = set()
        self._running_chains: dict[str, int] = {}
        self._watchers: dict[int, asyncio.Future[dict[str, Any] | None]] = {}
        self._starting: dict[int, asyncio.Future[None]] = {}  # job id -> resolved as its run begins
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # set once the start's recovery ran: before it, a job started by its commit could be
        # taken for one a crash interrupted (same instance name) and run twice
        self._recovered = False
        self._outcomes: list[tuple[Job, _Outcome, asyncio.Future[None]]] = []
        self._settle_wake = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None
        self._settler_stopping = False
        self._urgent: list[Callable[[], Awaitable[None]]] = []
        self.stats = OutboxStats()

    # ------------------------------------------------------------------ API for producers

    def register(self, kind: str, handler: Handler, *, on_done: OnDone | None = None, history: bool = True) -> None:
        """`history=False`: the handler never calls `job.previous()`, so its chain's done
        results are not read at claim time (a chat's chain grows without end)."""
        if kind in self._kinds:
            raise ValueError(f"outbox job kind {kind!r} is already registered")
        self._kinds[kind] = JobKind(handler, on_done, history)

    def defer_to(self, quiet: Callable[[], Awaitable[None]]) -> None:
        """Let urgent work go first: outcomes are stored once `quiet()` returns (at most
        URGENT_MAX_S later). A burst of calls has its registers on the wire before the box's
        CPU goes to marking the first ones done (features/calls: the announces)."""
        self._urgent.append(quiet)

    async def _after_urgent(self) -> None:
        try:
            async with asyncio.timeout(URGENT_MAX_S):  # in all: one per Asterisk would add up
                for quiet in self._urgent:
                    await quiet()
        except TimeoutError:
            pass

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    async def enqueue(
        self,
        session: AsyncSession,
        kind: str,
        instance_id: int | None,
        chain: str | None,
        payload: dict[str, Any],
        *,
        delay: float = 0.0,
        run_now: bool = False,
    ) -> int:
        """Add a job to the caller's transaction; it runs as soon as that transaction commits.

        `run_now` is for the first job of a new chain (a call's register): the row is stored
        already claimed (`running`, attempt 1) and the commit itself starts it, skipping the
        worker's claim transaction. Crash safety is the same as for a claimed job: a
        `running` row left by a crash is run again with `maybe_delivered` set.
        """
        if kind not in self._kinds:
            raise ValueError(f"unknown outbox job kind {kind!r}; registered: {', '.join(self.kinds)}")
        json.dumps(payload)  # fail here, in the caller's transaction, not later in the worker
        now = utcnow()
        committed = self._after_commit(session)
        # run_now only heads a chain: with an earlier job of the chain known to be unfinished
        # (this transaction's, or one this process runs or has yet to claim) it waits its turn
        run_now = (
            run_now
            and delay <= 0
            and self.running
            and self._recovered
            and (
                chain is None
                or not (chain in self._backlog or chain in committed.chains() or chain in self._running_chains)
            )
        )
        if session.new or session.dirty or session.deleted:
            await session.flush()  # rows the job may refer to (its app instance) go first
        job_id = await insert_returning_id(
            session,
            JOBS,
            {
                "kind": kind,
                "app_instance_id": instance_id,
                "chain": chain,
                "payload": payload,
                "status": "running" if run_now else "pending",
                "attempts": 1 if run_now else 0,
                "maybe_delivered": False,
                "next_attempt_at": now + dt.timedelta(seconds=delay),
                "last_attempt_at": now if run_now else None,
                "claimed_by": self.name if run_now else None,
                "lease_until": now + dt.timedelta(seconds=self.lease) if run_now else None,
            },
        )
        if run_now:
            committed.started.append(Job(job_id, kind, instance_id, chain, dict(payload), 1, False))
        else:
            committed.pending_chains.append(chain)
            committed.pending_ids.append(job_id)
        return job_id

    async def enqueue_in_order(
        self, session: AsyncSession, kind: str, instance_id: int | None, chain: str | None, payload: dict[str, Any]
    ) -> int:
        """`enqueue`, started by the commit itself (no claim round) when nothing of its chain
        is unfinished: neither known to this process nor stored (a job backing off, one left
        by an earlier process). Otherwise it waits its turn like any job. On PostgreSQL the
        chain's producers take turns (a transaction advisory lock on the chain), so two instances
        storing the same chain's jobs at once never both find it idle."""
        if chain is not None and self.shared:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:chain, 16))"), {"chain": chain})
        idle = chain is None or (
            await session.scalar(
                select(OutboxJob.id).where(OutboxJob.chain == chain, OutboxJob.status != "done").limit(1)
            )
            is None
        )
        return await self.enqueue(session, kind, instance_id, chain, payload, run_now=idle)

    def _after_commit(self, session: AsyncSession) -> _Committed:
        """What this transaction enqueued, acted on once it commits (dropped on rollback)."""
        info = session.sync_session.info
        key = ("outbox", id(self))
        committed: _Committed | None = info.get(key)
        if committed is not None:
            return committed
        committed = info[key] = _Committed()

        def on_commit() -> None:
            info.pop(key, None)
            self._committed(committed)

        def on_rollback() -> None:
            info.pop(key, None)
            for begun in committed.starting.values():  # the job never existed: nothing to wait for
                _resolve(begun)
            for job_id in committed.watched:  # the job never existed
                waiter = self._watchers.pop(job_id, None)
                if waiter is not None:
                    waiter.cancel()

        db.after_commit(session, on_commit)
        db.after_rollback(session, on_rollback)
        return committed

    def watch(self, session: AsyncSession, job_id: int) -> asyncio.Future[dict[str, Any] | None]:
        """The result of a job enqueued in `session`'s open transaction, once this process has
        stored it done (None if it failed for good). Retries keep it waiting; cancel it to stop
        waiting. Cancelled when the transaction rolls back."""
        waiter: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._watchers[job_id] = waiter
        waiter.add_done_callback(lambda done: self._forget_watcher(job_id, done))
        self._after_commit(session).watched.append(job_id)
        return waiter

    def _forget_watcher(self, job_id: int, done: asyncio.Future[dict[str, Any] | None]) -> None:
        # only this waiter: a rolled-back job's id can be reused at once (SQLite hands out the
        # same rowid), and its cancelled waiter's callback runs after the new one is watched
        if self._watchers.get(job_id) is done:
            del self._watchers[job_id]

    def started(self, session: AsyncSession, job_id: int) -> asyncio.Future[None]:
        """Resolved when the job enqueued in `session`'s open transaction has run up to its first
        wait: a job started by the commit (run_now) one loop turn after its task took that first
        step (a Bitrix request is then on the wire, or queued behind the portal's rate limit and
        its dispatcher has had its turn); any other job (left to the worker's claim) at the
        commit, and on rollback. A producer that awaits it after the commit lets its job go
        before its own next work (a burst of calls: each register leaves before the next call
        is stored)."""
        begun: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._after_commit(session).starting[job_id] = begun
        return begun

    def _committed(self, committed: _Committed) -> None:
        for job in committed.started:
            if self._stopping or self._task is None:
                continue  # left `running`: recovered (run again, flagged) on the next start
            begun = committed.starting.pop(job.id, None)
            if begun is not None:
                self._starting[job.id] = begun
            self._start(job)
        for begun in committed.starting.values():  # not started here: nobody should wait for a claim
            _resolve(begun)
        self._own_pending.update(committed.pending_ids)
        if committed.pending_chains:
            for chain in committed.pending_chains:
                if chain is not None:
                    self._backlog[chain] = self._backlog.get(chain, 0) + 1
            # behind a job running here, a successor is claimed when that job finishes
            if any(chain is None or chain not in self._running_chains for chain in committed.pending_chains):
                self.wake()

    def wake(self) -> None:
        self._wake.set()

    def _start(self, job: Job) -> None:
        if job.chain is not None:
            self._running_chains[job.chain] = self._running_chains.get(job.chain, 0) + 1
        self._inflight[job.id] = asyncio.get_running_loop().create_task(self._run(job), name=f"outbox-job-{job.id}")

    @property
    def running(self) -> bool:
        """The worker is started (jobs enqueued now run in this process)."""
        return self._task is not None and not self._task.done() and not self._stopping

    # ------------------------------------------------------------------ admin views

    async def retry(self, job_id: int) -> dict[str, Any]:
        """A failed (or backing-off) job is due again now; its attempts are kept."""
        async with self._sessions() as session, session.begin():
            row = await session.get(OutboxJob, job_id)
            if row is None:
                raise FieldError("id", f"no outbox job with id {job_id}", 404)
            if row.status in ("running", "done"):
                raise FieldError(
                    "status", f"job {job_id} is {row.status}; only pending or failed jobs can be retried", 409
                )
            row.status = "pending"
            row.next_attempt_at = utcnow()
            committed = self._after_commit(session)
            committed.pending_chains.append(row.chain)
            committed.pending_ids.append(row.id)
        log.info("outbox job retried by admin", extra={"job": job_id, "kind": row.kind})
        return describe(row)

    # ------------------------------------------------------------------ worker

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._settler_stopping = False
            self._recovered = False
            self._task = asyncio.create_task(self._loop(), name="outbox-worker")
            if self.shared:
                self._renewed = time.monotonic()
                self._heart = asyncio.create_task(self._heartbeat(), name="outbox-leases")
            log.info("outbox worker started", extra={"instance": self.name, "shared": self.shared})

    async def stop(self) -> None:
        """Let running jobs finish for a moment, then interrupt them; they run again next start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        tasks = list(self._inflight.values())
        heart, self._heart = self._heart, None
        if tasks:
            await asyncio.wait(tasks, timeout=self.stop_grace)
        for waiter in list(self._watchers.values()):
            waiter.cancel()
        interrupted = [job_id for job_id, task in self._inflight.items() if not task.done()]
        for job_id in interrupted:
            self._inflight[job_id].cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        for begun in self._starting.values():  # jobs cancelled before their first step
            _resolve(begun)
        self._starting.clear()
        if self._settler is not None:  # store what finished; give up after the grace (recovered next start)
            self._settler_stopping = True
            self._settle_wake.set()
            await asyncio.wait([self._settler], timeout=self.stop_grace)
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
            self._settler, self._settler_stopping = None, False
        if heart is not None:  # the leases are renewed until the running jobs are settled
            heart.cancel()
            await asyncio.gather(heart, return_exceptions=True)
        if interrupted:
            try:
                async with self._sessions() as session, session.begin():
                    await session.execute(
                        update(OutboxJob)
                        .where(
                            OutboxJob.id.in_(interrupted),
                            OutboxJob.status == "running",
                            OutboxJob.claimed_by == self.name,
                        )
                        .values(status="pending", maybe_delivered=True, claimed_by=None, lease_until=None)
                    )
            except Exception:
                log.exception("outbox: could not release interrupted jobs; they are recovered on next start")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._recover()
                self._recovered = True
                break
            except Exception:
                log.exception("outbox: recovery failed (database down?); retrying")
                await self._sleep(self.poll_interval)
        while not self._stopping:
            self._wake.clear()
            room = self.max_inflight - len(self._inflight)
            next_due: dt.datetime | None = None
            jobs: list[Job] = []
            if self.shared and not self.holds_leases:
                room = 0  # cut off from the database: whatever we claimed may be another's by now
            if room > 0:
                try:
                    # a claim stuck on a dead connection must not outlive the lease it takes
                    async with asyncio.timeout(self.lease if self.shared else None):
                        jobs, next_due = await self._claim(room)
                except Exception:
                    log.exception("outbox: claiming jobs failed (database down?)")
                self.stats.claims += 1
                self.stats.empty_claims += not jobs
            for job in jobs:
                self._start(job)
            if jobs and len(jobs) == room:
                await asyncio.sleep(0)
                continue
            timeout = self.poll_interval
            if next_due is not None:
                timeout = min(timeout, max(0.0, (next_due - utcnow()).total_seconds()))
            await self._sleep(timeout)

    async def _sleep(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _recover(self) -> None:
        """Jobs left running by a crash may have been sent: run them again, flagged. Several
        instances: only this instance's own claims (a restart under the same name) and expired
        ones, never the jobs another live instance runs."""
        where = [OutboxJob.status == "running"]
        if self.shared:
            where.append(
                (OutboxJob.claimed_by == self.name)
                | OutboxJob.claimed_by.is_(None)
                | (OutboxJob.lease_until < func.now())
            )
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(OutboxJob)
                .where(*where)
                .values(status="pending", maybe_delivered=True, claimed_by=None, lease_until=None)
            )
        resumed = getattr(result, "rowcount", 0)  # a CursorResult: UPDATE reports its row count
        if resumed:
            log.warning(
                "outbox: resuming jobs interrupted by a stop or crash", extra={"jobs": resumed, "instance": self.name}
            )

    @property
    def holds_leases(self) -> bool:
        """This instance renewed its leases within the last lease period (always, on SQLite)."""
        return not self.shared or time.monotonic() - self._renewed < self.lease

    def _lease_end(self) -> Any:
        """When a claim made now expires: database time on PostgreSQL (one clock for all instances)."""
        if self.shared:
            return func.now() + dt.timedelta(seconds=self.lease)
        return utcnow() + dt.timedelta(seconds=self.lease)

    async def _heartbeat(self) -> None:
        """PostgreSQL: renew this instance's leases every third of a lease and put back the jobs
        of instances whose leases expired (dead, or cut off from the database). An instance that
        cannot renew for a whole lease drops its running jobs: another instance takes them."""
        period = self.lease / 3
        renewal: asyncio.Task[list[int]] | None = None
        asked = time.monotonic()
        try:
            while True:
                began = time.monotonic()
                if renewal is None:
                    renewal, asked = asyncio.create_task(self._renew_and_reap(), name="outbox-renewal"), began
                # not wait_for: a cancelled statement on a dead connection may take minutes to
                # clean up, and the check below must run on time
                await asyncio.wait({renewal}, timeout=self.lease / 2)
                if not renewal.done():
                    renewal.cancel()  # a new attempt starts once this one has really ended
                    log.warning("outbox: could not renew leases", extra={"instance": self.name, "error": "timeout"})
                else:
                    finished, renewal = renewal, None
                    if finished.cancelled() or finished.exception() is not None:
                        error = "cancelled" if finished.cancelled() else type(finished.exception()).__name__
                        log.warning("outbox: could not renew leases", extra={"instance": self.name, "error": error})
                    else:
                        self._renewed = asked
                        reaped = finished.result()
                        if reaped:
                            log.warning(
                                "outbox: took back jobs whose claims expired",
                                extra={"jobs": len(reaped), "instance": self.name},
                            )
                            self.wake()
                if not self.holds_leases and self._inflight:
                    dropped = list(self._inflight.values())
                    log.error(
                        "outbox: leases lost (database unreachable); dropping running jobs for another instance",
                        extra={"jobs": len(dropped), "instance": self.name},
                    )
                    for task in dropped:
                        task.cancel()
                await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))
        finally:
            if renewal is not None:
                renewal.cancel()

    async def _renew_and_reap(self) -> list[int]:
        running = list(self._inflight)  # only jobs that run here: a stray claim (a claim whose
        # commit outlived its timeout) expires and is taken back like a dead instance's
        async with self._sessions() as session, session.begin():
            for start in range(0, len(running), 1000):
                await session.execute(
                    update(OutboxJob)
                    .where(
                        OutboxJob.id.in_(running[start : start + 1000]),
                        OutboxJob.claimed_by == self.name,
                        OutboxJob.status == "running",
                    )
                    .values(lease_until=self._lease_end())
                )
            reaped = await session.scalars(
                update(OutboxJob)
                .where(OutboxJob.status == "running", OutboxJob.lease_until < func.now())
                .values(status="pending", maybe_delivered=True, claimed_by=None, lease_until=None)
                .returning(OutboxJob.id)
            )
            return list(reaped.all())

    async def _claim(self, limit: int) -> tuple[list[Job], dt.datetime | None]:
        """Mark the due heads of their chains running (one transaction) and return them."""
        now = utcnow()
        async with self._sessions() as session, session.begin():
            jobs = await self._claim_due(session, now, limit)
            next_due = await session.scalar(
                select(func.min(OutboxJob.next_attempt_at)).where(
                    OutboxJob.status == "pending", OutboxJob.next_attempt_at > now
                )
            )
        return jobs, next_due

    async def _claim_due(
        self,
        session: AsyncSession,
        now: dt.datetime,
        limit: int,
        chains: set[str] | None = None,
        committing: _Committed | None = None,
    ) -> list[Job]:
        """In `session`'s transaction: mark the due heads of their chains (of `chains` only,
        when given) running, with their chains' earlier results, and return them.
        `committing`: what this same transaction enqueued (a job claimed here is no longer
        pending when it commits)."""
        earlier = aliased(OutboxJob)
        blocked = exists().where(earlier.chain == OutboxJob.chain, earlier.id < OutboxJob.id, earlier.status != "done")
        due = select(OutboxJob).where(OutboxJob.status == "pending", OutboxJob.next_attempt_at <= now, ~blocked)
        if chains is not None:
            due = due.where(OutboxJob.chain.in_(chains))
        due = due.order_by(OutboxJob.id).limit(limit)
        if self.shared:  # what another instance is claiming right now is skipped, not waited for
            due = due.with_for_update(skip_locked=True, of=OutboxJob)
        lease_end = self._lease_end()
        rows = (await session.scalars(due)).all()
        for row in rows:
            row.status = "running"
            row.attempts += 1
            row.last_attempt_at = now
            row.claimed_by = self.name
            row.lease_until = lease_end
            if committing is not None and row.id in committing.pending_ids:
                committing.pending_ids.remove(row.id)
                committing.pending_chains.remove(row.chain)
                continue  # enqueued by this very transaction: never counted as waiting
            own = row.id in self._own_pending
            self._own_pending.discard(row.id)
            if own and row.chain in self._backlog:
                left = self._backlog[row.chain] - 1
                if left > 0:
                    self._backlog[row.chain] = left
                else:
                    del self._backlog[row.chain]
            elif row.chain is not None:
                self._foreign.add(row.chain)  # recovered or enqueued elsewhere: successors unknown
        history: dict[str, list[tuple[int, str, dict[str, Any] | None]]] = {}
        wanted = sorted({row.chain for row in rows if row.chain and self._wants_history(row.kind)})
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            done = await session.execute(
                select(OutboxJob.chain, OutboxJob.id, OutboxJob.kind, OutboxJob.result)
                .where(OutboxJob.chain.in_(part), OutboxJob.status == "done")
                .order_by(OutboxJob.id)
            )
            for chain, job_id, kind, result in done.all():
                history.setdefault(chain, []).append((job_id, kind, result))
        return [
            Job(
                id=row.id,
                kind=row.kind,
                instance_id=row.app_instance_id,
                chain=row.chain,
                payload=dict(row.payload or {}),
                attempt=row.attempts,
                maybe_delivered=bool(row.maybe_delivered),
                earlier=tuple((k, r) for i, k, r in history.get(row.chain or "", []) if i < row.id),
            )
            for row in rows
        ]

    def _wants_history(self, kind: str) -> bool:
        known = self._kinds.get(kind)
        return known is None or known.history

    async def _run(self, job: Job) -> None:
        begun = self._starting.pop(job.id, None)
        if begun is not None:
            # resolved a turn after this step (which runs the handler up to its first wait), so
            # that whatever the step woke (the Bitrix client's dispatcher) also goes before the waiter
            asyncio.get_running_loop().call_soon(_resolve, begun)
        try:
            outcome = await self._attempt(job)
            await self._settle(job, outcome)
        finally:
            full = len(self._inflight) >= self.max_inflight
            self._inflight.pop(job.id, None)
            if job.chain is not None:
                left = self._running_chains.get(job.chain, 1) - 1
                if left > 0:
                    self._running_chains[job.chain] = left
                else:
                    self._running_chains.pop(job.chain, None)
            # Claim again only when this job may have held back a successor (one we
            # committed, or a chain we know nothing about) or freed the last slot. New
            # commits wake the worker themselves; timers and other processes' jobs are
            # found through `next_due` and the poll.
            foreign = job.chain in self._foreign
            if foreign:
                self._foreign.discard(job.chain)
            # (a successor handed on by our own commit is running already: nothing to claim)
            waiting = job.chain is not None and job.chain in self._backlog and job.chain not in self._running_chains
            if full or foreign or waiting:
                self._wake.set()

    async def _attempt(self, job: Job) -> _Outcome:
        kind = self._kinds.get(job.kind)
        if kind is None:
            return _Outcome("retry", error=f"no handler registered for job kind {job.kind!r}")
        try:
            result = await kind.handler(job)
        except Retry as exc:
            return _Outcome("retry", error=str(exc), after=exc.after, maybe_delivered=exc.maybe_delivered)
        except Fail as exc:
            return _Outcome("failed", error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("outbox job handler crashed", extra={"job": job.id, "kind": job.kind})
            error = f"{type(exc).__name__}: {exc}"
            if job.attempt >= self.max_bug_attempts:
                return _Outcome("failed", error=f"{error} (gave up after {job.attempt} attempts)")
            return _Outcome("retry", error=error, maybe_delivered=True)
        if result is not None and not isinstance(result, dict):
            result = {"value": result}
        return _Outcome("done", result=result)

    async def _settle(self, job: Job, outcome: _Outcome) -> None:
        """Hand the outcome to the settler and wait until it is stored (group commit)."""
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((job, outcome, stored))
        self._settle_wake.set()
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_loop(), name="outbox-settler")
        await stored

    async def _settle_loop(self) -> None:
        """Store outcomes in one transaction per group: a batch reply settles its 50 jobs at once,
        so their successors become due together. While the database is away the outcomes wait
        in memory (the remote work is done) and are retried."""
        pause = 0.5
        while True:
            if not self._outcomes:
                if self._settler_stopping:
                    return
                self._settle_wake.clear()
                await self._settle_wake.wait()
                continue
            await self._after_urgent()  # outcomes arriving meanwhile join this group
            group, self._outcomes = self._outcomes, []
            try:
                await self._store_outcomes(group)
            except Exception:
                log.exception("outbox: storing job outcomes failed; retrying", extra={"jobs": len(group)})
                self._outcomes[:0] = group
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 0.5
            for job, outcome, stored in group:
                if not stored.done():
                    stored.set_result(None)
                waiter = self._watchers.get(job.id)
                if waiter is not None and not waiter.done() and outcome.status != "retry":
                    waiter.set_result(outcome.result if outcome.status == "done" else None)

    async def _store_outcomes(self, group: list[tuple[Job, _Outcome, asyncio.Future[None]]]) -> None:
        now = utcnow()
        counts = {"done": 0, "retry": 0, "failed": 0}
        async with self._sessions() as session, session.begin():
            ids = [job.id for job, _, _ in group]
            rows_q = select(OutboxJob).where(OutboxJob.id.in_(ids)).order_by(OutboxJob.id)
            if self.shared:  # a claim being made elsewhere waits, or sees what is stored here
                rows_q = rows_q.with_for_update(of=OutboxJob)
            rows = {row.id: row for row in (await session.scalars(rows_q)).all()}
            for job, outcome, _ in group:
                row = rows.get(job.id)
                if row is None:  # its portal was deleted meanwhile (ON DELETE CASCADE)
                    continue
                if row.status in ("done", "failed") or row.claimed_by not in (None, self.name):
                    # our claim expired and another instance took the job (it runs it, flagged)
                    log.warning(
                        "outbox: outcome dropped, the job was taken over",
                        extra={"job": job.id, "kind": job.kind, "instance": self.name, "holder": row.claimed_by},
                    )
                    continue
                row.claimed_by = None
                row.lease_until = None
                counts[outcome.status] += 1
                if outcome.status == "done":
                    row.status = "done"
                    row.result = outcome.result
                    row.done_at = now
                    row.last_error = None
                    kind = self._kinds.get(job.kind)
                    if kind is not None and kind.on_done is not None:
                        await self._run_on_done(session, kind.on_done, row, outcome.result)
                elif outcome.status == "retry":
                    delay = outcome.after if outcome.after is not None else self.backoff(job.attempt)
                    row.status = "pending"
                    row.next_attempt_at = now + dt.timedelta(seconds=max(0.0, delay))
                    row.last_error = (outcome.error or "")[:2000]
                    row.maybe_delivered = bool(row.maybe_delivered or outcome.maybe_delivered)
                else:
                    row.status = "failed"
                    row.last_error = (outcome.error or "")[:2000]
                    log.warning("outbox job failed", extra={"job": job.id, "kind": job.kind, "error": row.last_error})
            handed = await self._hand_on(session, group)
        for job in handed:  # committed: their predecessors are done
            self._start(job)
        self.stats.handed += len(handed)
        self.stats.done += counts["done"]
        self.stats.retried += counts["retry"]
        self.stats.failed += counts["failed"]

    async def _hand_on(
        self, session: AsyncSession, group: list[tuple[Job, _Outcome, asyncio.Future[None]]]
    ) -> list[Job]:
        """The successors this process committed behind the jobs just done, claimed in the
        same transaction that stores them done: they start at its commit, without waiting for
        a claim round (a chat's next message, a notice after a send)."""
        committing = self._after_commit(session)
        done = {job.chain for job, outcome, _ in group if outcome.status == "done" and job.chain is not None}
        # behind them: jobs committed earlier, or enqueued just now by their on_done hooks
        chains = {c for c in done if c in self._backlog or c in committing.pending_chains}
        room = self.max_inflight - len(self._inflight)
        if not chains or room <= 0 or not self.running or (self.shared and not self.holds_leases):
            return []
        await session.flush()  # the jobs just done no longer block their successors
        # now, not the group's time: a hook's job was stored a moment after it
        return await self._claim_due(session, utcnow(), room, chains, committing)

    async def _run_on_done(
        self, session: AsyncSession, hook: OnDone, row: OutboxJob, result: dict[str, Any] | None
    ) -> None:
        try:
            async with session.begin_nested():
                await hook(session, row, result)
        except Exception as exc:  # the remote side is done; never undo that because a hook broke
            log.exception("outbox on_done hook failed", extra={"job": row.id, "kind": row.kind})
            row.last_error = f"on_done hook failed: {type(exc).__name__}: {exc}"[:2000]

    def backoff(self, attempt: int) -> float:
        """Exponential with +-20 % jitter so a recovering portal is not hit by a wall of retries."""
        base: float = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt - 1)))
        return base * random.uniform(0.8, 1.2)

    @property
    def inflight(self) -> int:
        return len(self._inflight)


def default_instance_name() -> str:
    """hostname:pid, unique among live instances (setting `instance_name` for a stable one)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
