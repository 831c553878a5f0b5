"""Several `thoth-pbx serve` processes on one real PostgreSQL, between the Meta and Bitrix24
simulators (issue 16): webhooks spread over the instances reach Bitrix24 once each and in order,
the portal's rate limit holds for all of them together, a SIGKILLed instance's claimed jobs are
finished by another once its lease expired, and an instance cut off from the database stops
claiming and gives its jobs up.

Bitrix24 counts requests per portal in a leaky bucket and answers QUERY_LIMIT_EXCEEDED past it
(https://apidocs.bitrix24.com/limits.html; the simulator does the same and records every
request's time)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import func, select

from tests.support.bitrix import wait_until
from tests.support.cluster import Cluster
from tests.support.tcp_proxy import FreezableProxy
from thoth_pbx.features.messaging.inbound import KIND_INBOUND
from thoth_pbx.outbox.models import OutboxJob, RateBucket
from thoth_pbx.store import db


@pytest.fixture
async def pg_url(postgres_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    name, url = postgres_server.create_database()
    yield url.replace("postgresql://", "postgresql+asyncpg://", 1)
    postgres_server.drop_database(name)


def customers(count: int) -> list[str]:
    return [f"1555200{n:04d}" for n in range(count)]


def assert_once_in_order(cluster: Cluster, sent: list[tuple[str, str]]) -> None:
    seen = cluster.in_bitrix()
    counts = Counter(seen)
    assert [m for m in sent if counts[m] != 1] == [], "each message exactly once"
    by_chat: dict[str, list[str]] = defaultdict(list)
    for chat, text in seen:
        by_chat[chat].append(text)
    for chat, texts in by_chat.items():
        assert texts == [text for c, text in sent if c == chat], f"order of chat {chat}"


async def running_claims(cluster: Cluster) -> dict[str | None, int]:
    """Running message jobs per holder (the portal's own setup jobs may run too: not counted)."""
    engine = db.create_engine(cluster.database_url)
    try:
        async with db.session_factory(engine)() as session:
            rows = await session.execute(
                select(OutboxJob.claimed_by, func.count())
                .where(OutboxJob.status == "running", OutboxJob.kind == KIND_INBOUND)
                .group_by(OutboxJob.claimed_by)
            )
            return {holder: count for holder, count in rows.all()}
    finally:
        await engine.dispose()


async def job_states(database_url: str) -> list[tuple[object, ...]]:
    """For a failure's message: what each job is doing."""
    engine = db.create_engine(database_url)
    try:
        async with db.session_factory(engine)() as session:
            rows = await session.execute(
                select(
                    OutboxJob.id,
                    OutboxJob.kind,
                    OutboxJob.chain,
                    OutboxJob.status,
                    OutboxJob.claimed_by,
                    OutboxJob.attempts,
                    OutboxJob.last_error,
                ).order_by(OutboxJob.id)
            )
            return [tuple(row) for row in rows.all()]
    finally:
        await engine.dispose()


async def inbound_done(database_url: str, count: int) -> bool:
    """Every message's job stored done and none of them left running anywhere (other jobs a live
    instance started while a test held Bitrix24's answers may still be waiting for them)."""
    engine = db.create_engine(database_url)
    try:
        async with db.session_factory(engine)() as session:
            done = await session.scalar(
                select(func.count()).where(OutboxJob.kind == KIND_INBOUND, OutboxJob.status == "done")
            )
            running = await session.scalar(
                select(func.count()).where(OutboxJob.kind == KIND_INBOUND, OutboxJob.status == "running")
            )
        return done == count and running == 0
    finally:
        await engine.dispose()


async def test_webhooks_spread_over_three_instances_reach_bitrix_once_in_order(tmp_path: Path, pg_url: str) -> None:
    cluster = Cluster(tmp_path, pg_url, size=3)
    try:
        await cluster.open()
        chats = customers(20)
        sent: list[tuple[str, str]] = []
        for k in range(200):
            chat, text = chats[k % 20], f"m{k // 20} {chats[k % 20]}"
            sent.append((chat, text))
            message = [(chat, text, f"wamid.{chat}.{k // 20}")]
            member = cluster.members[k % 3]
            if k % 5 == 0:  # the same delivery posted to two instances at once
                other = cluster.members[(k + 1) % 3]
                await asyncio.gather(cluster.post(member, message), cluster.post(other, message))
            else:
                await cluster.post(member, message)
        await wait_until(lambda: len(cluster.in_bitrix()) >= 200, timeout=120, what="all 200 messages")
        assert_once_in_order(cluster, sent)
    finally:
        await cluster.close()


async def test_1000_jobs_from_three_instances_keep_the_portals_limit_in_total(tmp_path: Path, pg_url: str) -> None:
    rate, burst = 2, 50
    cluster = Cluster(tmp_path, pg_url, size=3)
    try:
        await cluster.open(rate=rate, burst=burst)
        chats = customers(100)
        sent: list[tuple[str, str]] = []
        for n in range(10):
            for part in range(10):  # a delivery of 10 messages, the instances in turn
                group = [(chat, f"n{n} {chat}", f"wamid.{chat}.{n}") for chat in chats[part * 10 : part * 10 + 10]]
                sent += [(chat, text) for chat, text, _ in group]
                await cluster.post(cluster.members[(n * 10 + part) % 3], group)
        await wait_until(lambda: len(cluster.in_bitrix()) >= 1000, timeout=240, what="all 1000 messages")
        assert_once_in_order(cluster, sent)
        await wait_until(lambda: inbound_done(pg_url, 1000), timeout=60, what="every job stored done")
        requests = [r for r in cluster.bridge.sim.recorder.requests if r.path.startswith("/rest/")]
        assert not [r for r in requests if r.error == "QUERY_LIMIT_EXCEEDED"]
        # replay the portal's counter over the request times: never past the burst
        level, last = 0.0, requests[0].at
        for record in requests:
            level = max(0.0, level - (record.at - last) * rate) + 1
            last = record.at
            assert level <= burst, (record, level)
        jobs = Counter()
        engine = db.create_engine(pg_url)
        try:
            async with db.session_factory(engine)() as session:
                for kind, status, count in await session.execute(
                    select(OutboxJob.kind, OutboxJob.status, func.count()).group_by(OutboxJob.kind, OutboxJob.status)
                ):
                    jobs[(kind, status)] = count
                assert await session.scalar(select(func.count()).select_from(RateBucket)) == 1
        finally:
            await engine.dispose()
        assert jobs[(KIND_INBOUND, "done")] == 1000, jobs
        assert not [key for key in jobs if key[1] in ("running", "failed")], jobs
        # more requests than one burst: per-process buckets (45 each) let three instances pass
        # the portal's 50 (this test then sees QUERY_LIMIT_EXCEEDED; measured 95 requests here)
        assert len(requests) > burst, len(requests)
    finally:
        await cluster.close()


async def test_a_sigkilled_instances_claimed_jobs_are_finished_by_another_after_its_lease(
    tmp_path: Path, pg_url: str
) -> None:
    cluster = Cluster(tmp_path, pg_url, size=3, settings={"THOTH_OUTBOX_LEASE_SECONDS": "2"})
    try:
        await cluster.open()
        sim = cluster.bridge.sim
        sim.latency = 3600.0  # Bitrix24 holds every request: the jobs stay claimed
        victim = cluster.members[1]
        chats = customers(10)
        sent = [(chat, f"before the kill {chat}") for chat in chats]
        await cluster.post(victim, [(chat, text, f"wamid.kill.{chat}") for chat, text in sent])
        await wait_until(lambda: _holds(cluster, "i1", 10), timeout=30, what="the victim holds the 10 jobs")
        await victim.kill()
        sim.latency = 0.0  # the held requests never ran (their sender is gone); new ones go through
        try:
            await wait_until(lambda: len(cluster.in_bitrix()) >= 10, timeout=30, what="the jobs finished by another")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await job_states(pg_url)}") from None
        assert_once_in_order(cluster, sent)
        try:
            await wait_until(lambda: inbound_done(pg_url, 10), timeout=30, what="the jobs stored done")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await job_states(pg_url)}") from None
        engine = db.create_engine(pg_url)
        try:
            async with db.session_factory(engine)() as session:
                taken = (await session.scalars(select(OutboxJob).where(OutboxJob.kind == KIND_INBOUND))).all()
        finally:
            await engine.dispose()
        assert all(job.status == "done" and job.maybe_delivered and job.attempts >= 2 for job in taken)
    finally:
        await cluster.close()


async def _holds(cluster: Cluster, name: str, count: int) -> bool:
    return (await running_claims(cluster)).get(name, 0) >= count


async def test_an_instance_cut_off_from_the_database_stops_claiming_and_its_jobs_are_taken_over(
    tmp_path: Path, pg_url: str
) -> None:
    parts = urlsplit(pg_url)
    assert parts.hostname and parts.port
    proxy = FreezableProxy(parts.hostname, parts.port)
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{await proxy.start()}"))
    cluster = Cluster(tmp_path, pg_url, size=2, settings={"THOTH_OUTBOX_LEASE_SECONDS": "2"})
    try:
        await cluster.open()
        cut = cluster.members[1]
        await cut.close()  # restarted on the relay
        cut.proc = cut.http = None
        cut.environ["THOTH_DATABASE_URL"] = proxied
        await cut.start()
        sim = cluster.bridge.sim
        sim.latency = 3600.0
        chats = customers(5)
        sent = [(chat, f"before the cut {chat}") for chat in chats]
        await cluster.post(cut, [(chat, text, f"wamid.cut.{chat}") for chat, text in sent])
        await wait_until(lambda: _holds(cluster, "i1", 5), timeout=30, what="the cut instance holds the 5 jobs")
        proxy.frozen.set()  # the cable is cut: no bytes either way, nothing closed
        sim.latency = 0.0
        await wait_until(lambda: len(cluster.in_bitrix()) >= 5, timeout=30, what="the jobs taken over")
        log = cut.log
        await wait_until(
            lambda: "leases lost" in log.read_text(errors="replace"), timeout=30, what="the cut instance gives up"
        )
        after = [(chat, f"after the cut {chat}") for chat in chats]
        await cluster.post(cluster.members[0], [(chat, text, f"wamid.after.{chat}") for chat, text in after])
        await wait_until(lambda: len(cluster.in_bitrix()) >= 10, timeout=30, what="later jobs, by the other")
        assert_once_in_order(cluster, sent + after)
        await cut.kill()
    finally:
        await cluster.close()
        await proxy.stop()
