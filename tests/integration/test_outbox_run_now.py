"""Outbox jobs started by their own commit (run_now), result watchers, and claims only when due."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.support.bitrix import wait_until
from thoth_pbx.outbox.jobs import Fail, Job
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.types import utcnow


class Recorder:
    """A job kind whose handler notes the order of runs and can be held at a gate."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def handle(self, job: Job) -> dict[str, Any]:
        name = job.payload["name"]
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()
        if job.payload.get("fail"):
            raise Fail("refused")
        self.ran.append(name)
        return {"name": name, "after": [r.get("name") if r else None for _, r in job.earlier]}


@pytest.fixture
async def outbox(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[tuple[Outbox, Recorder]]:
    recorder = Recorder()
    box = Outbox(sessions, poll_interval=60.0)  # no poll during a test: every claim is a wake-up
    box.register("t", recorder.handle)
    box.start()
    await wait_until(lambda: box.stats.claims >= 1, what="the worker's first claim")
    yield box, recorder
    await box.stop()


async def _status(sessions: async_sessionmaker[AsyncSession], job_id: int) -> str:
    async with sessions() as session:
        return str(await session.scalar(select(OutboxJob.status).where(OutboxJob.id == job_id)))


async def test_a_run_now_job_is_stored_claimed_and_started_by_the_commit(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    box, recorder = outbox
    recorder.gates["a"] = asyncio.Event()
    async with sessions() as session, session.begin():
        job_id = await box.enqueue(session, "t", None, "chain-a", {"name": "a"}, run_now=True)
        done = box.watch(session, job_id)
    await wait_until(lambda: box.inflight == 1, what="the job to start")
    async with sessions() as session:
        row = await session.get(OutboxJob, job_id)
        assert row is not None and row.status == "running" and row.attempts == 1 and row.last_attempt_at is not None
    recorder.gates["a"].set()
    assert await asyncio.wait_for(done, 10) == {"name": "a", "after": []}
    assert await _status(sessions, job_id) == "done"
    assert box.stats.claims == 1  # only the worker's start-up claim: the commit ran the job


async def test_a_chain_after_a_run_now_head_runs_in_order_without_empty_claims(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    box, recorder = outbox
    async with sessions() as session, session.begin():
        await box.enqueue(session, "t", None, "chain-b", {"name": "b1"}, run_now=True)
        await box.enqueue(session, "t", None, "chain-b", {"name": "b2"})
        last = await box.enqueue(session, "t", None, "chain-b", {"name": "b3"})
        done = box.watch(session, last)
    assert await asyncio.wait_for(done, 10) == {"name": "b3", "after": ["b1", "b2"]}
    assert recorder.ran == ["b1", "b2", "b3"]
    # no claim after the start-up one: the commit started b1, and each job's "done" commit
    # claimed its successor (b2, then b3)
    assert box.stats.claims == 1 and box.stats.empty_claims == 1, box.stats
    assert box.stats.handed == 2


async def test_run_now_waits_behind_an_unfinished_job_of_its_chain(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    box, recorder = outbox
    recorder.gates["c1"] = asyncio.Event()
    async with sessions() as session, session.begin():
        await box.enqueue(session, "t", None, "chain-c", {"name": "c1"}, run_now=True)
    await wait_until(lambda: box.inflight == 1, what="c1 running")
    async with sessions() as session, session.begin():
        second = await box.enqueue(session, "t", None, "chain-c", {"name": "c2"}, run_now=True)
        done = box.watch(session, second)
    assert await _status(sessions, second) == "pending"  # not run next to c1
    recorder.gates["c1"].set()
    assert await asyncio.wait_for(done, 10) == {"name": "c2", "after": ["c1"]}
    assert recorder.ran == ["c1", "c2"]


async def test_a_rolled_back_run_now_job_never_runs_and_its_watcher_is_cancelled(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    box, recorder = outbox
    async with sessions() as session:
        async with session.begin():
            job_id = await box.enqueue(session, "t", None, "chain-d", {"name": "d"}, run_now=True)
            watcher = box.watch(session, job_id)
            await session.rollback()
    assert watcher.cancelled()
    async with sessions() as session, session.begin():  # the next commit runs normally
        later = box.watch(session, await box.enqueue(session, "t", None, "chain-e", {"name": "e"}, run_now=True))
    await asyncio.wait_for(later, 10)
    assert recorder.ran == ["e"]
    async with sessions() as session:
        assert (await session.scalars(select(OutboxJob.chain))).all() == ["chain-e"]


async def test_a_watched_job_that_fails_for_good_resolves_to_none(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    box, _ = outbox
    async with sessions() as session, session.begin():
        job_id = await box.enqueue(session, "t", None, None, {"name": "f", "fail": True}, run_now=True)
        watcher = box.watch(session, job_id)
    assert await asyncio.wait_for(watcher, 10) is None
    assert await _status(sessions, job_id) == "failed"


async def test_run_now_before_the_worker_starts_leaves_the_job_to_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    recorder = Recorder()
    box = Outbox(sessions, poll_interval=60.0)
    box.register("t", recorder.handle)
    async with sessions() as session, session.begin():
        job_id = await box.enqueue(session, "t", None, "chain-g", {"name": "g"}, run_now=True)
    assert await _status(sessions, job_id) == "pending" and recorder.ran == []
    box.start()
    try:
        await wait_until(lambda: recorder.ran == ["g"], what="the worker to claim it")
    finally:
        await box.stop()


async def test_no_claim_transaction_finds_nothing_to_run(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Calls arrive one by one: register (run_now) with its successor, then the next call."""
    box, recorder = outbox
    for i in range(5):
        async with sessions() as session, session.begin():
            await box.enqueue(session, "t", None, f"chain-h{i}", {"name": f"h{i}-1"}, run_now=True)
            last = box.watch(session, await box.enqueue(session, "t", None, f"chain-h{i}", {"name": f"h{i}-2"}))
        await asyncio.wait_for(last, 10)
        await wait_until(lambda: box.inflight == 0, what="the chain to settle")
    assert len(recorder.ran) == 10
    # Only the start-up claim: the commit did not wake the worker while the head ran, the
    # commit storing the head done claimed its successor, and the successor's end woke nobody.
    assert box.stats.claims == 1 and box.stats.empty_claims == 1, box.stats
    assert box.stats.handed == 5


async def test_enqueue_in_order_starts_an_idle_chain_at_once_and_waits_behind_a_stored_job(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A job stored pending for later (backing off, or left by an earlier process) is unknown to
    this process's bookkeeping: enqueue_in_order still queues behind it; on an idle chain the job
    starts with its commit."""
    later = utcnow() + dt.timedelta(hours=1)
    async with sessions() as session, session.begin():
        old = OutboxJob(kind="t", chain="chat", payload={"name": "old"}, status="pending", next_attempt_at=later)
        session.add(old)
    recorder = Recorder()
    box = Outbox(sessions, poll_interval=60.0)
    box.register("t", recorder.handle, history=False)
    box.start()
    await wait_until(lambda: box.stats.claims >= 1, what="the worker's first claim")
    try:
        async with sessions() as session, session.begin():
            await box.enqueue_in_order(session, "t", None, "chat", {"name": "behind"})
        async with sessions() as session, session.begin():
            await box.enqueue_in_order(session, "t", None, "idle", {"name": "alone"})
        await wait_until(lambda: "alone" in recorder.ran, what="the idle chain's job")
        assert recorder.ran == ["alone"]  # "behind" did not jump ahead of the stored job
        async with sessions() as session, session.begin():
            row = await session.get(OutboxJob, old.id)
            assert row is not None
            row.next_attempt_at = utcnow()
        box.wake()
        await wait_until(lambda: recorder.ran == ["alone", "old", "behind"], what="the chain in order")
    finally:
        await box.stop()


async def test_started_resolves_after_the_jobs_first_step_at_the_commit_for_pending_and_on_rollback(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`started` lets a producer put its job first (a burst of calls: each register leaves before
    the next call is stored): for a run_now job it resolves once the job has run up to its first
    wait; a job left to the worker's claim is not waited for; a rolled back one neither."""
    box, _ = outbox
    entered: list[str] = []
    gate = asyncio.Event()

    async def handler(job: Job) -> None:
        entered.append(job.payload["name"])  # the first step: where a Bitrix request goes on the wire
        await gate.wait()

    box.register("s", handler)
    seen_at_resolution: list[list[str]] = []
    async with sessions() as session, session.begin():
        first = await box.enqueue(session, "s", None, "chain-s", {"name": "first"}, run_now=True)
        started = box.started(session, first)
        started.add_done_callback(lambda _: seen_at_resolution.append(list(entered)))
        assert not started.done()  # nothing before the commit
    await asyncio.wait_for(started, 10)
    assert seen_at_resolution == [["first"]]
    async with sessions() as session, session.begin():  # behind `first` in its chain: left to the worker
        second = await box.enqueue(session, "s", None, "chain-s", {"name": "second"}, run_now=True)
        waiting = box.started(session, second)
    assert waiting.done() and entered == ["first"]
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            gone = await box.enqueue(session, "s", None, "chain-gone", {"name": "gone"}, run_now=True)
            rolled_back = box.started(session, gone)
            raise RuntimeError("the producer's transaction fails")
    assert rolled_back.done()
    gate.set()
    await wait_until(lambda: entered == ["first", "second"] and box.inflight == 0, what="both jobs to run")


async def test_a_job_its_predecessors_on_done_hook_enqueued_starts_with_that_commit(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A send's on_done hook queues the operator's notice on the same chat: the commit that
    stores the send done also claims the notice, so it starts without a claim round, once."""
    recorder = Recorder()
    box = Outbox(sessions, poll_interval=60.0)

    async def then_notice(session: AsyncSession, row: OutboxJob, result: dict[str, Any] | None) -> None:
        if row.payload["name"] == "send":
            await box.enqueue(session, "t", None, row.chain, {"name": "notice"})

    box.register("t", recorder.handle, on_done=then_notice)
    box.start()
    try:
        await wait_until(lambda: box.stats.claims >= 1, what="the worker's first claim")
        async with sessions() as session, session.begin():
            await box.enqueue(session, "t", None, "chat", {"name": "send"}, run_now=True)
        await wait_until(lambda: recorder.ran == ["send", "notice"], what="the notice after the send")
        await wait_until(lambda: box.inflight == 0, what="both settled")
        assert box.stats.claims == 1 and box.stats.handed == 1, box.stats
        async with sessions() as session:
            statuses = (await session.scalars(select(OutboxJob.status).order_by(OutboxJob.id))).all()
        assert statuses == ["done", "done"]
        # nothing of the chain is left counted as waiting: the next job's end wakes nobody
        async with sessions() as session, session.begin():
            await box.enqueue(session, "t", None, "chat", {"name": "later"}, run_now=True)
        await wait_until(lambda: recorder.ran[-1:] == ["later"] and box.inflight == 0, what="the later job")
        assert box.stats.claims == 1, box.stats
    finally:
        await box.stop()


async def test_a_job_committed_before_the_starts_recovery_runs_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A commit right after start(), before the worker's recovery ran: the job must not be
    started by its commit (the recovery would take it for one a crash interrupted and run it
    again); it waits for the first claim and runs once."""
    recorder = Recorder()
    recorder.gates["early"] = asyncio.Event()
    box = Outbox(sessions, poll_interval=60.0)
    box.register("t", recorder.handle)
    box.start()
    try:
        async with sessions() as session, session.begin():  # the worker's task has not run yet
            job_id = await box.enqueue(session, "t", None, "chain-early", {"name": "early"}, run_now=True)
            done = box.watch(session, job_id)
        await wait_until(lambda: box.stats.claims >= 1 and box.inflight == 1, what="the job claimed after recovery")
        recorder.gates["early"].set()
        assert await asyncio.wait_for(done, 10) == {"name": "early", "after": []}
        await wait_until(lambda: box.inflight == 0, what="settled")
        assert recorder.ran == ["early"]
        async with sessions() as session:
            row = await session.get(OutboxJob, job_id)
            assert row is not None and row.status == "done" and row.attempts == 1 and not row.maybe_delivered
    finally:
        recorder.gates["early"].set()
        await box.stop()


async def test_outcomes_wait_for_urgent_work_and_are_then_stored_together(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A burst of calls (features/calls `announced`) goes before marking jobs done: the remote
    work is done at once, the outcomes are stored once the urgent work is."""
    box, recorder = outbox
    urgent_done = asyncio.Event()

    async def quiet() -> None:
        await urgent_done.wait()

    box.defer_to(quiet)
    ids, done = [], []
    for name in ("a", "b"):
        async with sessions() as session, session.begin():
            ids.append(await box.enqueue(session, "t", None, f"urgent-{name}", {"name": name}, run_now=True))
            done.append(box.watch(session, ids[-1]))
    await wait_until(lambda: recorder.ran == ["a", "b"], what="both handlers to run")
    assert [await _status(sessions, i) for i in ids] == ["running", "running"]
    assert not any(d.done() for d in done)
    urgent_done.set()
    assert [await asyncio.wait_for(d, 10) for d in done] == [{"name": "a", "after": []}, {"name": "b", "after": []}]
    assert [await _status(sessions, i) for i in ids] == ["done", "done"]


async def test_urgent_work_holds_outcomes_back_for_a_bounded_time(
    outbox: tuple[Outbox, Recorder], sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    box, _ = outbox
    monkeypatch.setattr("thoth_pbx.outbox.queue.URGENT_MAX_S", 0.05)

    async def never_quiet() -> None:
        await asyncio.Event().wait()

    box.defer_to(never_quiet)
    async with sessions() as session, session.begin():
        job_id = await box.enqueue(session, "t", None, None, {"name": "c"}, run_now=True)
        done = box.watch(session, job_id)
    assert await asyncio.wait_for(done, 10) == {"name": "c", "after": []}
    assert await _status(sessions, job_id) == "done"
