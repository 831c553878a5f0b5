"""Install, events and uninstall end to end: the simulated portal posts to the real service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.support.bitrix import ServiceEnv, jobs, service_env, wait_until
from thoth_pbx.clients.bitrix import phpquery
from thoth_pbx.clients.bitrix.telephony import INCOMING, RegisterCall
from thoth_pbx.features.calls.jobs import KIND_REGISTER
from thoth_pbx.features.directory.models import AppInstance
from thoth_pbx.features.portal.install import DEFAULT_EVENTS, BitrixEvent
from thoth_pbx.features.portal.users import extension_for_user, user_for_extension
from thoth_pbx.outbox.models import OutboxJob

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def env(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[ServiceEnv]:  # type: ignore[no-untyped-def]
    async with service_env(tmp_path, database_url, aiohttp_server, aiohttp_client) as environment:
        yield environment


async def instance_row(env: ServiceEnv) -> AppInstance:
    async with env.sessions() as session:
        return (await session.scalars(select(AppInstance))).one()


async def test_install_stores_encrypted_tokens_binds_events_adds_lines_and_maps_users(
    env: ServiceEnv, json_logs
) -> None:  # type: ignore[no-untyped-def]
    seen: list[BitrixEvent] = []

    async def on_callback_start(event: BitrixEvent) -> dict[str, Any]:
        seen.append(event)
        return {"handled": True}

    env.services.bitrix.app.on_event("ONEXTERNALCALLBACKSTART", on_callback_start)
    instance_id = await env.install()

    row = await instance_row(env)
    assert row.status == "active" and row.member_id == env.portal.member_id
    assert row.client_endpoint == env.portal.client_endpoint
    # the tokens kept are the rotated pair from the OAuth server, valid now, and encrypted at rest
    assert env.sim._access[row.access_token].expires_at > 0 and row.refresh_token in env.sim._refresh
    assert row.application_token == env.portal.application_token
    async with env.services.engine.connect() as conn:
        raw = (
            await conn.execute(text("SELECT access_token, refresh_token, application_token FROM app_instance"))
        ).one()
    for stored, plain in zip(raw, (row.access_token, row.refresh_token, row.application_token), strict=True):
        assert plain not in stored and env.services.secret_box.decrypt(stored) == plain
        assert plain not in json_logs.text  # never logged, not even in httpx's request lines
    assert "bitrix app installed" in json_logs.text and env.sim.client_secret not in json_logs.text

    handler = env.public_url + "/api/bitrix/events"
    # the portal's own events and those other features registered (messaging: its line events)
    bound = env.services.bitrix.app.bound_events
    assert set(DEFAULT_EVENTS) < set(bound) and "ONIMCONNECTORLINEDELETE" in bound
    assert "ONEXTERNALCALLSTART" in bound  # click-to-call (features/callback)
    assert {(b["event"], b["handler"]) for b in env.portal.bindings} == {(e, handler) for e in bound}

    users = (await (await env.http.get(f"/api/admin/bitrix/instances/{instance_id}/users", headers=env.admin)).json())[
        "items"
    ]
    assert [(u["user_id"], u["extension"]) for u in users] == [(1, "100"), (2, "101"), (3, "102")]  # 4 is inactive
    async with env.sessions() as session:
        assert await user_for_extension(session, instance_id, "102") == 3
        assert await extension_for_user(session, instance_id, 2) == "101"
        assert await user_for_extension(session, instance_id, "103") is None

    # a WhatsApp number linked to the portal gets its external line (idempotent set-up job)
    waba = await (
        await env.http.post(
            "/api/admin/wabas", json={"name": "Main", "access_token": "EAAG" + "x" * 30}, headers=env.admin
        )
    ).json()
    phone = {
        "number": "+14155550123",
        "phone_number_id": "106540352242922",
        "waba_account_id": waba["id"],
        "app_instance_id": instance_id,
    }
    assert (await env.http.post("/api/admin/phones", json=phone, headers=env.admin)).status == 201
    await wait_until(lambda: "14155550123" in env.portal.lines, what="the external line")
    assert env.portal.lines["14155550123"]["NAME"] == "WhatsApp +14155550123"
    resp = await env.http.post(f"/api/admin/bitrix/instances/{instance_id}/sync", headers=env.admin)
    assert resp.status == 202
    await wait_until(lambda: jobs_all_done(env), what="the admin sync")
    assert len(env.portal.lines) == 1 and env.sim.recorder.count("telephony.externalline.add", ok=True) == 1

    # events reach the registered handler through the outbox
    sent = await env.sim.send_event(
        env.portal,
        "ONEXTERNALCALLBACKSTART",
        {"PHONE_NUMBER": "+4949512345", "USER_ID": "2", "CALL_ID": "externalCall.abc.1"},
    )
    assert [status for _, status in sent] == [200]
    await wait_until(lambda: seen, what="the event handler")
    assert seen[0].instance_id == instance_id and seen[0].data["CALL_ID"] == "externalCall.abc.1"


async def jobs_all_done(env: ServiceEnv) -> bool:
    return all(j.status == "done" for j in await jobs(env.sessions))


async def test_event_with_a_wrong_application_token_is_refused_before_anything_is_stored(env: ServiceEnv) -> None:
    calls: list[BitrixEvent] = []

    async def handler(event: BitrixEvent) -> None:
        calls.append(event)

    env.services.bitrix.app.on_event("ONEXTERNALCALLBACKSTART", handler)
    await env.install()
    before = len(await jobs(env.sessions))
    sent = await env.sim.send_event(
        env.portal, "ONEXTERNALCALLBACKSTART", {"USER_ID": "2"}, application_token="forged-token-0000"
    )
    assert [status for _, status in sent] == [401]
    # an unknown portal, and a form without any token, are refused the same way
    for form in (
        {"event": "ONEXTERNALCALLBACKSTART", "auth": {"member_id": "nobody", "application_token": "x" * 32}},
        {"event": "ONEXTERNALCALLBACKSTART", "data": {"USER_ID": "2"}},
    ):
        resp = await env.http.post("/api/bitrix/events", data=phpquery.encode(form), headers=FORM)
        assert resp.status == 401
        assert (await resp.json())["error"]["field"] == "auth[application_token]"
    assert len(await jobs(env.sessions)) == before and calls == []
    sent = await env.sim.send_event(env.portal, "ONEXTERNALCALLBACKSTART", {"USER_ID": "2"})
    assert [status for _, status in sent] == [200]
    await wait_until(lambda: calls, what="the genuine event")


async def test_forged_or_malformed_installs_are_refused(env: ServiceEnv) -> None:
    forged = {
        "event": "ONAPPINSTALL",
        "auth": {
            "member_id": env.portal.member_id,
            "access_token": "a" * 32,
            "refresh_token": "made-up-refresh-token",
            "application_token": "b" * 32,
            "client_endpoint": "https://evil.example.com/rest/",
        },
    }
    resp = await env.http.post("/api/bitrix/install", data=phpquery.encode(forged), headers=FORM)
    assert resp.status == 401 and (await resp.json())["error"]["field"] == "auth[refresh_token]"
    missing = {"auth": {"member_id": "m1", "refresh_token": "r" * 32}}
    resp = await env.http.post("/api/bitrix/install", data=phpquery.encode(missing), headers=FORM)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "auth[application_token]"
    resp = await env.http.post("/api/bitrix/install", json=forged)
    assert resp.status == 415 and (await resp.json())["error"]["field"] == "body"
    async with env.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AppInstance)) == 0


async def test_reinstall_rebinds_events_and_replaces_the_application_token(env: ServiceEnv) -> None:
    await env.install()
    old_token = env.portal.application_token
    await env.install()  # Bitrix dropped the bindings and issued a new application_token
    assert len(env.portal.bindings) == len(env.services.bitrix.app.bound_events)
    async with env.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(AppInstance)) == 1
    sent = await env.sim.send_event(
        env.portal, "ONAPPUNINSTALL", {"CLEAN": 0}, with_tokens=False, application_token=old_token
    )
    assert [status for _, status in sent] == [401]
    assert (await instance_row(env)).status == "active"


async def test_the_next_event_sees_a_new_application_token_and_an_uninstall(env: ServiceEnv) -> None:
    """The portal's key is kept in memory between events (store/snapshots.py): a reinstall's
    new application_token and an uninstall hold from the very next event on."""
    await env.install()
    event, data = "ONEXTERNALCALLBACKSTART", {"PHONE_NUMBER": "+14155550100"}
    assert [status for _, status in await env.sim.send_event(env.portal, event, data)] == [200]  # key kept
    old_token = env.portal.application_token
    await env.install()
    assert env.portal.application_token != old_token
    stale = await env.sim.send_event(env.portal, event, data, application_token=old_token)
    assert [status for _, status in stale] == [401]
    assert [status for _, status in await env.sim.send_event(env.portal, event, data)] == [200]
    bindings = list(env.portal.bindings)
    await env.sim.uninstall(env.portal)
    env.portal.bindings.extend(bindings)  # an event Bitrix24 had already sent
    assert [status for _, status in await env.sim.send_event(env.portal, event, data)] == [410]


async def test_uninstall_deactivates_the_instance_and_its_jobs_fail_visibly(env: ServiceEnv) -> None:
    instance_id = await env.install()
    sent = await env.sim.uninstall(env.portal)
    assert [status for _, status in sent] == [200]
    row = await instance_row(env)
    assert row.status == "uninstalled" and row.access_token is None and row.refresh_token is None
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(
            session, instance_id, RegisterCall("+14155550100", INCOMING, "late-1", user_id=2)
        )
    await wait_until(lambda: jobs(env.sessions, status="failed"), what="the failed job")
    failed = (await (await env.http.get("/api/admin/outbox?status=failed", headers=env.admin)).json())["items"]
    assert failed[0]["kind"] == KIND_REGISTER and "not installed" in failed[0]["last_error"]


async def test_needs_reauth_is_shown_to_admins_and_a_reinstall_resumes_waiting_jobs(env: ServiceEnv) -> None:
    instance_id = await env.install()
    env.sim.revoke_refresh_tokens(env.portal)  # 180 days without a renewal
    env.sim.expire_access_tokens(env.portal)
    async with env.sessions() as session, session.begin():
        await env.services.call_jobs.register(
            session, instance_id, RegisterCall("+14155550100", INCOMING, "wait-1", user_id=2)
        )

    async def waiting() -> OutboxJob | None:
        found = await jobs(env.sessions, kind=KIND_REGISTER)
        return found[0] if found and found[0].last_error else None

    job = await wait_until(waiting, what="the first failed attempt")
    assert job.status == "pending" and "reinstall" in job.last_error
    shown = await (await env.http.get(f"/api/admin/instances/{instance_id}", headers=env.admin)).json()
    assert shown["status"] == "needs_reauth" and "invalid_grant" in shown["status_detail"]
    await env.install()  # the admin reinstalls the app; the waiting job goes at once
    done = await jobs(env.sessions, kind=KIND_REGISTER)
    assert done[0].status == "done" and done[0].result["CALL_ID"] in env.portal.active_calls
    assert (await instance_row(env)).status == "active"
