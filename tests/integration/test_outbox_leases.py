"""The outbox's claims across instances on a real PostgreSQL, several `Outbox` workers in one
process standing for several instances (each with its own engine, as processes have): row
locks that skip another instance's claims (FOR UPDATE SKIP LOCKED:
https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE), leases in
database time, a start that recovers only its own and expired claims, an outcome dropped when
the claim was taken over, and the shared rate-limit row. SQLite keeps its single-instance
behaviour (the existing test_outbox_*.py run on both engines)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tests.support.bitrix import wait_until
from thoth_pbx.clients.bitrix.bucket import SharedBucket
from thoth_pbx.features.directory import AppInstance
from thoth_pbx.outbox.admin import describe
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.models import OutboxJob, RateBucket
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.outbox.rate import shared_reserve
from thoth_pbx.store import db

KIND = "test.echo"


@pytest.fixture
async def pg_url(postgres_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    name, url = postgres_server.create_database()
    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = db.create_engine(url)
    await db.upgrade(engine)
    await engine.dispose()
    yield url
    postgres_server.drop_database(name)


class Instance:
    """One worker with an engine of its own; `runs` records (instance, job id, maybe_delivered)."""

    def __init__(self, url: str, name: str, runs: list[tuple[str, int, bool]], *, lease: float = 30.0) -> None:
        self.engine: AsyncEngine = db.create_engine(url)
        self.sessions: async_sessionmaker[AsyncSession] = db.session_factory(engine=self.engine)
        self.outbox = Outbox(self.sessions, name=name, lease=lease, poll_interval=0.2)
        self.hold = asyncio.Event()  # cleared: handlers wait (a job held running)
        self.hold.set()
        self.started = asyncio.Event()
        self.work = 0.0

        async def echo(job: Job) -> dict[str, Any]:
            runs.append((name, job.id, job.maybe_delivered))
            self.started.set()
            await self.hold.wait()
            await asyncio.sleep(self.work)  # the remote call's time (others claim meanwhile)
            return {"by": name}

        self.outbox.register(KIND, echo)

    async def close(self) -> None:
        await self.outbox.stop()
        await self.engine.dispose()


async def enqueue(sessions: async_sessionmaker[AsyncSession], outbox: Outbox, chains: list[str | None]) -> list[int]:
    async with sessions() as session, session.begin():
        return [await outbox.enqueue(session, KIND, None, chain, {"n": n}) for n, chain in enumerate(chains)]


async def rows(sessions: async_sessionmaker[AsyncSession]) -> dict[int, OutboxJob]:
    async with sessions() as session:
        return {row.id: row for row in (await session.scalars(select(OutboxJob))).all()}


async def all_done(sessions: async_sessionmaker[AsyncSession], count: int) -> bool:
    async with sessions() as session:
        done = await session.scalar(select(func.count()).where(OutboxJob.status == "done"))
    return done == count


async def test_three_instances_run_each_job_once_and_each_chain_in_order(pg_url: str) -> None:
    runs: list[tuple[str, int, bool]] = []
    instances = [Instance(pg_url, name, runs) for name in ("a", "b", "c")]
    try:
        for instance in instances:
            instance.work = 0.01
            instance.outbox.start()
        chains: list[str | None] = [f"chain-{n % 20}" for n in range(300)] + [None] * 100
        ids = []
        for start in range(0, len(chains), 20):  # every instance produces, in turn
            producer = instances[start // 20 % 3]
            ids += await enqueue(producer.sessions, producer.outbox, chains[start : start + 20])
        await wait_until(lambda: all_done(instances[0].sessions, len(ids)), timeout=60, what="every job")
        assert sorted(job_id for _, job_id, _ in runs) == sorted(ids)  # each once
        assert len({name for name, _, _ in runs}) >= 2  # shared out, not one instance doing it all
        by_chain: dict[str, list[int]] = defaultdict(list)
        chain_of = dict(zip(ids, chains, strict=True))
        for _, job_id, _ in runs:
            chain = chain_of[job_id]
            if chain is not None:
                by_chain[chain].append(job_id)
        assert all(order == sorted(order) for order in by_chain.values())
        stored = await rows(instances[0].sessions)
        assert all(row.claimed_by is None and row.lease_until is None for row in stored.values())
    finally:
        for instance in instances:
            await instance.close()


async def test_a_start_recovers_its_own_and_expired_claims_and_never_a_live_instances(pg_url: str) -> None:
    runs: list[tuple[str, int, bool]] = []
    b = Instance(pg_url, "b", runs, lease=1.0)
    try:
        ids = await enqueue(b.sessions, b.outbox, ["own", "expired", "live"])
        claims = {ids[0]: ("b", 30.0), ids[1]: ("x", -5.0), ids[2]: ("other", 3.0)}  # name, lease left
        async with b.sessions() as session, session.begin():
            for job_id, (holder, left) in claims.items():
                await session.execute(
                    update(OutboxJob)
                    .where(OutboxJob.id == job_id)
                    .values(
                        status="running",
                        attempts=1,
                        claimed_by=holder,
                        lease_until=func.now() + dt.timedelta(seconds=left),
                    )
                )
        b.outbox.start()
        await wait_until(lambda: len(runs) >= 2, what="b's own and the expired claim run")
        assert sorted(job_id for _, job_id, _ in runs[:2]) == ids[:2]
        assert all(flag for _, _, flag in runs)  # maybe delivered: they may have been sent
        live = (await rows(b.sessions))[ids[2]]
        assert (live.status, live.claimed_by) == ("running", "other")  # another live instance's
        # "other" never renews: once its lease passed, b takes the job back (heartbeat) and runs it
        await wait_until(lambda: all_done(b.sessions, 3), timeout=15, what="the dead instance's job")
        assert runs[2] == ("b", ids[2], True)
    finally:
        await b.close()


async def test_a_dead_instances_running_job_is_finished_by_another_after_its_lease(pg_url: str) -> None:
    runs: list[tuple[str, int, bool]] = []
    a = Instance(pg_url, "a", runs, lease=1.0)
    b = Instance(pg_url, "b", runs, lease=1.0)
    try:
        a.hold.clear()
        a.outbox.start()
        (job_id,) = await enqueue(a.sessions, a.outbox, ["call-1"])
        await asyncio.wait_for(a.started.wait(), 10)
        held = (await rows(a.sessions))[job_id]
        assert held.claimed_by == "a" and held.lease_until is not None
        shown = describe(held)  # GET /api/admin/outbox: who runs it, until when
        assert shown["claimed_by"] == "a" and shown["lease_until"] is not None
        b.outbox.start()
        # a "dies": its worker and heartbeat stop without releasing anything, its engine closes
        assert a.outbox._task is not None and a.outbox._heart is not None
        a.outbox._task.cancel()
        a.outbox._heart.cancel()
        await asyncio.gather(a.outbox._task, a.outbox._heart, return_exceptions=True)
        a.outbox._task = a.outbox._heart = None
        await wait_until(lambda: all_done(b.sessions, 1), timeout=15, what="b finishes a's job")
        assert runs[-1] == ("b", job_id, True)
        assert (await rows(b.sessions))[job_id].result == {"by": "b"}
        # a's handler finishes late: its outcome is dropped (b's stays)
        a.hold.set()
        await wait_until(lambda: not a.outbox._inflight, what="a's late job ends")
        assert (await rows(b.sessions))[job_id].result == {"by": "b"}
    finally:
        a.hold.set()
        await a.close()
        await b.close()


async def test_chain_producers_on_two_instances_keep_the_chain_in_order(pg_url: str) -> None:
    """enqueue_in_order from two instances at once on one chain (ten transactions interleaved
    on the loop: each checks the chain, then inserts): the advisory lock makes each see the
    other's job, so the chain never has two jobs started by their commits."""
    runs: list[tuple[str, int, bool]] = []
    a = Instance(pg_url, "a", runs)
    b = Instance(pg_url, "b", runs)
    try:
        a.outbox.start()
        b.outbox.start()
        a.hold.clear()
        b.hold.clear()

        async def produce(instance: Instance, n: int) -> int:
            async with instance.sessions() as session, session.begin():
                return await instance.outbox.enqueue_in_order(session, KIND, None, "chat-1", {"n": n})

        ids = await asyncio.gather(*(produce(a if n % 2 else b, n) for n in range(10)))
        await wait_until(lambda: len(runs) >= 1, what="the chain's first job runs")
        stored = await rows(a.sessions)
        assert sum(row.status == "running" for row in stored.values()) == 1
        a.hold.set()
        b.hold.set()
        await wait_until(lambda: all_done(a.sessions, len(ids)), timeout=30, what="the chain")
        assert [job_id for _, job_id, _ in runs] == sorted(ids)
    finally:
        a.hold.set()
        b.hold.set()
        await a.close()
        await b.close()


async def test_the_shared_bucket_counts_every_instances_requests_in_one_row(pg_url: str) -> None:
    """Two instances' buckets of one portal, 120 requests at once: the reservations leave no
    faster than rate/s after the burst (what the portal would admit), each one statement."""
    engines = [db.create_engine(pg_url) for _ in range(2)]
    try:
        async with db.session_factory(engines[0])() as session, session.begin():
            portal = AppInstance(member_id="m1", domain="p.example.com", client_endpoint="https://p.example.com/rest/")
            session.add(portal)
            await session.flush()
            instance_id = portal.id
        rate, burst = 20.0, 30
        sent: list[float] = []
        loop = asyncio.get_running_loop()
        buckets = [
            SharedBucket(rate, burst, shared_reserve(engine, instance_id, rate, burst), headroom=0)
            for engine in engines
        ]

        async def request(bucket: SharedBucket) -> None:
            await bucket.claim()
            sent.append(loop.time())

        await asyncio.gather(*(request(buckets[n % 2]) for n in range(120)))
        assert sum(bucket.reservations for bucket in buckets) == 120
        sent.sort()
        # replay the portal's counter over the send times: it never passes the burst
        level, last = 0.0, sent[0]
        for at in sent:
            level = max(0.0, level - (at - last) * rate) + 1
            last = at
            assert level <= burst + 0.5, level
        assert sent[-1] - sent[0] >= (120 - burst) / rate * 0.95  # paced by the shared row
        async with db.session_factory(engines[0])() as session:
            row = await session.get(RateBucket, instance_id)
            assert row is not None and row.level > 0
    finally:
        for engine in engines:
            await engine.dispose()
