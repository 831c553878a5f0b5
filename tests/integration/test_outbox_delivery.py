"""The outbox delivering call logs to the simulated portal: order, outages, limits, failures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.bitrix import (
    ServiceEnv,
    all_done,
    call,
    chain_order,
    enqueue_call_logs,
    jobs,
    service_env,
    wait_until,
)
from thoth_pbx.clients.bitrix.telephony import FinishCall
from thoth_pbx.features.calls.jobs import KIND_FINISH, KIND_REGISTER
from thoth_pbx.features.calls.models import Call
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.queue import Outbox


@pytest.fixture
async def env(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[ServiceEnv]:  # type: ignore[no-untyped-def]
    async with service_env(
        tmp_path, database_url, aiohttp_server, aiohttp_client, operating_window_s=1.0
    ) as environment:
        yield environment


async def test_a_calls_jobs_run_in_order_and_share_its_call_id(env: ServiceEnv, tmp_path: Path) -> None:
    instance_id = await env.install()
    record = tmp_path / "call.mp3"
    record.write_bytes(b"ID3" + bytes(range(256)) * 8)
    calls = env.services.call_jobs
    async with env.sessions() as session, session.begin():
        for i in range(5):
            session.add(
                Call(
                    linkedid=call(i).external_call_id,
                    channel_id=f"ch{i}",
                    caller=call(i).phone_number,
                    called="+14155550123",
                )
            )
            await calls.register(session, instance_id, call(i))
            await calls.show(session, instance_id, call(i).external_call_id, [2, 3])
            await calls.hide(session, instance_id, call(i).external_call_id, [3])
            await calls.finish(
                session, instance_id, call(i).external_call_id, FinishCall(user_id=2, duration=12, status_code="200")
            )
            await calls.attach_record(session, instance_id, call(i).external_call_id, path=str(record))
    await wait_until(lambda: all_done(env.sessions), what="every job")
    order = chain_order(env.sim)
    for i in range(5):
        assert order[call(i).external_call_id] == ["register", "show", "hide", "finish", "attachrecord"]
    registered = {
        j.payload["EXTERNAL_CALL_ID"]: j.result["CALL_ID"] for j in await jobs(env.sessions, kind=KIND_REGISTER)
    }
    stats = env.portal.statistics
    assert {stats[c]["EXTERNAL_CALL_ID"] for c in registered.values()} == set(registered)
    assert all(stats[c]["CALL_DURATION"] == 12 and stats[c]["_ADD_TO_CHAT"] for c in registered.values())
    assert all(env.portal.records[c]["size"] == record.stat().st_size for c in registered.values())
    assert not env.portal.active_calls


async def test_jobs_of_a_rolled_back_transaction_are_never_sent(env: ServiceEnv) -> None:
    instance_id = await env.install()
    seen = len(env.sim.recorder.entries)
    async with env.sessions() as session:
        async with session.begin():
            await env.services.call_jobs.register(session, instance_id, call(1))
            await session.rollback()
    async with env.sessions() as session, session.begin():  # a later job proves the worker was awake
        await env.services.call_jobs.register(session, instance_id, call(2))
    await wait_until(lambda: env.sim.recorder.count("telephony.externalcall.register"), what="the committed job")
    assert [e.params["EXTERNAL_CALL_ID"] for e in env.sim.recorder.entries[seen:]] == ["1710140185.2"]


async def test_portal_down_then_back_delivers_every_job_once_and_in_order(env: ServiceEnv) -> None:
    instance_id = await env.install()
    env.sim.recorder.clear()
    env.sim.outage = True
    await enqueue_call_logs(env.services.call_jobs, env.sessions, instance_id, 25)

    async def all_attempted_and_failed() -> bool:
        rows = await jobs(env.sessions, kind=KIND_REGISTER)
        return all(r.attempts >= 2 and r.last_error for r in rows)

    await wait_until(all_attempted_and_failed, what="retries during the outage")
    waiting = (await (await env.http.get("/api/admin/outbox", headers=env.admin)).json())["items"]
    assert len(waiting) == 50 and {j["status"] for j in waiting} <= {"pending", "running"}
    assert all("HTTP 503" in j["last_error"] for j in waiting if j["kind"] == KIND_REGISTER)
    env.sim.outage = False
    await wait_until(lambda: all_done(env.sessions), what="delivery after the outage")

    assert env.sim.recorder.count("telephony.externalcall.register", ok=False) == 0
    assert env.sim.recorder.count("telephony.externalcall.register") == 25
    assert env.sim.recorder.count("telephony.externalcall.finish") == 25
    assert all(methods == ["register", "finish"] for methods in chain_order(env.sim).values())
    assert len(env.portal.statistics) == 25 and not env.portal.active_calls


async def test_a_burst_of_500_jobs_never_exceeds_the_portals_rate_limit(env: ServiceEnv) -> None:
    instance_id = await env.install()
    env.portal.burst = 8  # a portal with a small bucket: 10 batch requests at once would trip it
    resp = await env.http.patch(f"/api/admin/instances/{instance_id}", json={"rate_burst": 8}, headers=env.admin)
    assert resp.status == 200
    env.sim.recorder.clear()
    started = time.monotonic()
    async with env.sessions() as session, session.begin():
        for i in range(500):
            await env.services.call_jobs.register(session, instance_id, call(i))
    await wait_until(lambda: all_done(env.sessions), timeout=30, what="500 jobs")
    assert env.sim.recorder.errors("QUERY_LIMIT_EXCEEDED") == 0
    assert env.sim.recorder.count("telephony.externalcall.register", ok=True) == 500
    assert len({e.params["EXTERNAL_CALL_ID"] for e in env.sim.recorder.calls("telephony.externalcall.register")}) == 500
    requests = [r for r in env.sim.recorder.requests if r.path.startswith("/rest/")]
    assert 10 <= len(requests) <= 25  # batches of up to 50 (smaller ones while the bucket had room)
    # 5 requests fit the bucket at once (8 minus a headroom of 3), the rest went at 2/s
    assert time.monotonic() - started >= (len(requests) - 5) / 2 * 0.9


async def test_a_failed_job_is_visible_with_its_error_blocks_its_chain_and_can_be_retried(env: ServiceEnv) -> None:
    instance_id = await env.install()
    inactive = call(7, user_id=4)  # user 4 has left the company: Bitrix refuses the register
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(session, instance_id, inactive)
        await env.services.call_jobs.finish(session, instance_id, inactive.external_call_id, FinishCall(user_id=2))
    await wait_until(lambda: jobs(env.sessions, status="failed"), what="the failure")
    body = await (await env.http.get("/api/admin/outbox", headers=env.admin)).json()
    failed = [j for j in body["items"] if j["status"] == "failed"]
    assert body["counts"]["failed"] == 1 and failed[0]["kind"] == KIND_REGISTER
    assert "ERROR_CORE" in failed[0]["last_error"] and "User is not found or is not active" in failed[0]["last_error"]
    assert [j["status"] for j in body["items"] if j["kind"] == KIND_FINISH] == ["pending"]
    assert env.sim.recorder.count("telephony.externalcall.finish") == 0  # finish never before register
    assert env.sim.recorder.count("telephony.externalcall.register") == 1  # logic errors are not retried

    env.portal.users[4].active = True  # fixed in Bitrix; the admin retries
    resp = await env.http.post(f"/api/admin/outbox/{failed[0]['id']}/retry", headers=env.admin)
    assert resp.status == 200 and (await resp.json())["status"] == "pending"
    await wait_until(lambda: all_done(env.sessions), what="the retried chain")
    assert chain_order(env.sim)[inactive.external_call_id] == ["register", "finish"]
    resp = await env.http.post(f"/api/admin/outbox/{failed[0]['id']}/retry", headers=env.admin)
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "status"
    assert (await env.http.get("/api/admin/outbox?status=bogus", headers=env.admin)).status == 400
    assert (await env.http.get("/api/admin/outbox")).status == 401


async def test_operation_time_limit_holds_the_job_until_operating_reset_at(env: ServiceEnv) -> None:
    instance_id = await env.install()
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(session, instance_id, call(1))
    await wait_until(lambda: all_done(env.sessions), what="a first register (learns operating_reset_at)")
    until = env.sim.exhaust_operating(env.portal, "telephony.externalcall.register")
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(session, instance_id, call(2))

    async def held() -> bool:
        rows = await jobs(env.sessions, kind=KIND_REGISTER)
        return len(rows) == 2 and bool(rows[1].last_error) and rows[1].status == "pending"

    await wait_until(held, what="the 429")
    waiting = (await jobs(env.sessions, kind=KIND_REGISTER))[1]
    assert "OPERATION_TIME_LIMIT" in waiting.last_error
    assert waiting.next_attempt_at.timestamp() == pytest.approx(until, abs=0.5)
    await wait_until(lambda: all_done(env.sessions), what="delivery after the reset")
    assert env.sim.recorder.errors("OPERATION_TIME_LIMIT") == 1  # no hammering while blocked
    done = (await jobs(env.sessions, kind=KIND_REGISTER))[1]
    assert done.done_at.timestamp() >= until


async def test_outbox_api_contract(env: ServiceEnv) -> None:
    """Unknown kinds and non-JSON payloads are refused in the caller's transaction; on_done runs with the result."""
    outbox: Outbox = env.services.outbox
    hooked: list[dict] = []  # type: ignore[type-arg]

    async def echo(job: Job) -> dict:  # type: ignore[type-arg]
        return {"echo": job.payload["n"], "previous": job.previous("test.echo")}

    async def on_done(session, row, result) -> None:  # type: ignore[no-untyped-def]
        hooked.append(result)

    outbox.register("test.echo", echo, on_done=on_done)
    with pytest.raises(ValueError):
        outbox.register("test.echo", echo)
    async with env.sessions() as session, session.begin():
        with pytest.raises(ValueError):
            await outbox.enqueue(session, "test.nope", None, None, {})
        with pytest.raises(TypeError):
            await outbox.enqueue(session, "test.echo", None, None, {"n": object()})
        for n in range(3):
            await outbox.enqueue(session, "test.echo", None, "echo-chain", {"n": n})
    await wait_until(lambda: len(hooked) == 3, what="the hooks")
    assert [h["echo"] for h in hooked] == [0, 1, 2]
    assert [h["previous"] for h in hooked] == [
        None,
        {"echo": 0, "previous": None},
        {"echo": 1, "previous": {"echo": 0, "previous": None}},
    ]


async def test_a_committed_job_starts_at_once_not_at_the_next_poll(env: ServiceEnv) -> None:
    instance_id = await env.install()
    env.services.outbox.poll_interval = 60.0  # only the commit hook can wake the worker in time
    for i in range(2):  # the second enqueue finds the worker asleep on the 60 s timer
        async with env.sessions() as session, session.begin():
            await env.services.call_jobs.register(session, instance_id, call(i))
        started = time.monotonic()
        await wait_until(lambda: all_done(env.sessions), timeout=5, what="the job, well before the next poll")
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("code", ["user_access_error", "insufficient_scope", "ACCESS_DENIED"])
async def test_a_permission_error_with_401_fails_the_job_once_without_a_token_refresh(
    env: ServiceEnv, code: str
) -> None:
    """Bitrix answers some permission errors with 401: refreshing would spend tokens and retry for ever."""
    instance_id = await env.install()
    refreshes = env.sim.oauth_refreshes
    env.portal.refused["telephony.externalcall.register"] = (code, "Access denied", 401)
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(session, instance_id, call(8))
    await wait_until(lambda: jobs(env.sessions, status="failed"), what="the failure")
    body = await (await env.http.get("/api/admin/outbox", headers=env.admin)).json()
    failed = [j for j in body["items"] if j["status"] == "failed"]
    assert [j["kind"] for j in failed] == [KIND_REGISTER] and failed[0]["attempts"] == 1
    assert code in failed[0]["last_error"] and (
        "reinstall" in failed[0]["last_error"] or "access" in failed[0]["last_error"]
    )
    assert env.sim.oauth_refreshes == refreshes  # no refresh token spent
    assert env.sim.recorder.count("telephony.externalcall.register") == 1


async def test_an_expired_token_is_still_refreshed_and_the_job_delivered(env: ServiceEnv) -> None:
    instance_id = await env.install()
    refreshes = env.sim.oauth_refreshes
    env.sim.expire_access_tokens(env.portal)
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(session, instance_id, call(9))
    await wait_until(lambda: all_done(env.sessions), what="the register")
    assert env.sim.oauth_refreshes == refreshes + 1
    assert len(env.sim.recorder.calls("telephony.externalcall.register", ok=True)) == 1
