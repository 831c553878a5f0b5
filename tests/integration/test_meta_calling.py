"""Calling + SIP on Meta: the real service against the strict Meta simulator over loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.conftest import make_settings
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.features.directory.models import Phone
from thoth_pbx.sandbox import meta as sim

SEED = sim.Seed()
HOST = "pbx.example.com"


@pytest.fixture
async def meta(aiohttp_server) -> tuple[sim.MetaSimulator, str]:  # type: ignore[no-untyped-def]
    simulator = sim.seeded(SEED)
    server = await aiohttp_server(simulator.app())
    return simulator, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def service(tmp_path: Path, database_url: str, meta, aiohttp_client):  # type: ignore[no-untyped-def]
    from thoth_pbx.app import build_app, open_services

    settings = make_settings(tmp_path, database_url, THOTH_META_GRAPH_URL=meta[1])
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    client.services = services
    client.sim = meta[0]
    client.auth = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    return client


async def make_phone(
    service, *, token: str = SEED.token, hostname: str | None = HOST, port: int = 5061
) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    waba = {
        "name": "Main",
        "waba_id": SEED.waba_id,
        "access_token": token,
        "app_secret": SEED.app_secret,
        "app_id": SEED.app_id,
    }
    resp = await service.post("/api/admin/wabas", json=waba, headers=service.auth)
    assert resp.status == 201, await resp.text()
    phone = {
        "number": SEED.display_phone_number,
        "phone_number_id": SEED.phone_number_id,
        "waba_account_id": (await resp.json())["id"],
        "sip_hostname": hostname,
        "sip_port": port,
    }
    resp = await service.post("/api/admin/phones", json=phone, headers=service.auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def calling(service, phone_id: int, action: str):  # type: ignore[no-untyped-def]
    return await service.post(f"/api/admin/phones/{phone_id}/calling", json={"action": action}, headers=service.auth)


async def clear_trunk_flag(service, phone_id: int) -> None:  # type: ignore[no-untyped-def]
    """What the trunk apply (another part) does once the PBX has the new settings."""
    async with service.services.sessions() as session, session.begin():
        phone = await session.get(Phone, phone_id)
        phone.trunk_needs_apply = False


async def test_enable_stores_password_encrypted_and_shows_sip_state(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    resp = await calling(service, phone["id"], "enable")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    password = service.sim.password(SEED.phone_number_id, SEED.app_id)
    assert password and body["result"]["ok"] is True and body["result"]["problems"] == []
    state = body["phone"]["calling_state"]
    assert state["status"] == "ENABLED" and state["sip"]["status"] == "ENABLED"
    assert state["sip"]["servers"] == [{"app_id": SEED.app_id, "hostname": HOST, "port": 5061}]
    assert state["srtp_key_exchange_protocol"] == "SDES"
    assert body["phone"]["calling_enabled"] and body["phone"]["sip_enabled"] and body["phone"]["last_error"] is None
    assert body["phone"]["trunk_needs_apply"] is True  # the password feeds the trunk's auth sections
    assert password not in await resp.text()  # shown masked only
    # what Meta received: exactly the documented body
    posted = [r for r in service.sim.requests if r["method"] == "POST"]
    assert posted[-1]["json"] == {
        "calling": {
            "status": "ENABLED",
            "srtp_key_exchange_protocol": "SDES",
            "sip": {"status": "ENABLED", "servers": [{"hostname": HOST, "port": 5061}]},
        }
    }
    gets = [r for r in service.sim.requests if r["method"] == "GET"]
    assert gets[-1]["query"] == {"include_sip_credentials": "true"}
    async with service.services.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT sip_user_password FROM phone"))).scalar_one()
    assert raw and password not in raw  # encrypted at rest
    async with service.services.sessions() as session:
        stored = await session.get(Phone, phone["id"])
        assert stored.sip_user_password == password


@pytest.mark.parametrize(
    ("code", "subcode", "hint_words"),
    [
        (138015, None, "2,000"),
        (138018, None, "prerequisites"),
        (100, None, "parameter"),
        (131055, None, "SIP enabled"),
        (190, None, "token"),
        (100, 33, "phone number id"),
    ],
)
async def test_each_documented_error_lands_in_the_error_field(service, code, subcode, hint_words) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    service.sim.fail_next(sim.FailRule(code=code, subcode=subcode, details="sandbox detail", method="POST"))
    resp = await calling(service, phone["id"], "enable")
    assert resp.status == 502
    body = await resp.json()
    error = body["phone"]["last_error"]
    assert error["code"] == code and error["subcode"] == subcode
    assert error["fbtrace_id"] and error["message"] and error["step"] == "update settings"
    assert hint_words in error["hint"] and body["error"]["message"] == error["hint"]
    assert body["phone"]["calling_enabled"] is False
    listed = await (await service.get("/api/admin/phones", headers=service.auth)).json()
    assert listed["items"][0]["last_error"]["code"] == code  # visible in the phone's Error field


async def test_simulator_refusals_are_meta_errors_not_crashes(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    service.sim.phones[SEED.phone_number_id].messaging_limit = 1000
    body = await (await calling(service, phone["id"], "enable")).json()
    assert body["phone"]["last_error"]["code"] == 138015
    service.sim.phones[SEED.phone_number_id].messaging_limit = 100_000
    service.sim.apps[SEED.app_id].live = False
    body = await (await calling(service, phone["id"], "enable")).json()
    assert body["phone"]["last_error"]["code"] == 138018
    service.sim.apps[SEED.app_id].live = True
    resp = await calling(service, phone["id"], "enable")
    assert resp.status == 200 and (await resp.json())["phone"]["last_error"] is None  # success clears the error


async def test_invalid_token_is_190_with_hint(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service, token="EAAG" + "x" * 30)
    body = await (await calling(service, phone["id"], "enable")).json()
    assert body["phone"]["last_error"]["code"] == 190 and "token" in body["phone"]["last_error"]["hint"]


async def test_enable_without_hostname_is_refused_before_meta(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service, hostname=None)
    resp = await calling(service, phone["id"], "enable")
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "sip_hostname"
    # nothing about the number reached Meta (the account's template listing is another matter)
    assert [r for r in service.sim.requests if not r["path"].endswith("/message_templates")] == []
    for bad in ({"action": "explode"}, {"action": "enable", "force": True}):
        resp = await service.post(f"/api/admin/phones/{phone['id']}/calling", json=bad, headers=service.auth)
        assert resp.status == 400
    assert (await calling(service, 999, "show")).status == 404


async def test_read_back_mismatch_is_an_error(service) -> None:  # type: ignore[no-untyped-def]
    from thoth_pbx.sandbox.meta import server as graph_server  # where the simulator's Graph routes look it up

    phone = await make_phone(service)
    original = graph_server.settings_view

    def lying_view(p, app_id, creds):  # type: ignore[no-untyped-def]
        view = original(p, app_id, creds)
        for server in view["calling"]["sip"]["servers"]:
            server["hostname"] = "other.example.net"
        return view

    graph_server.settings_view = lying_view  # Meta answers success but holds something else
    try:
        resp = await calling(service, phone["id"], "enable")
    finally:
        graph_server.settings_view = original
    assert resp.status == 502
    error = (await resp.json())["phone"]["last_error"]
    assert error["step"] == "read back" and "other.example.net" in error["message"]


async def test_sip_changes_flag_the_trunk_for_reapply(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    assert (await calling(service, phone["id"], "enable")).status == 200
    await clear_trunk_flag(service, phone["id"])
    # a refresh that changes nothing leaves the trunk alone
    resp = await calling(service, phone["id"], "show")
    assert resp.status == 200 and (await resp.json())["phone"]["trunk_needs_apply"] is False
    # renaming a phone is not a trunk change
    resp = await service.patch(f"/api/admin/phones/{phone['id']}", json={"sms_service": True}, headers=service.auth)
    assert (await resp.json())["trunk_needs_apply"] is False
    for change in ({"sip_hostname": "pbx2.example.com"}, {"sip_port": 5081}):
        resp = await service.patch(f"/api/admin/phones/{phone['id']}", json=change, headers=service.auth)
        assert (await resp.json())["trunk_needs_apply"] is True, change
        await clear_trunk_flag(service, phone["id"])
    old_password = service.sim.password(SEED.phone_number_id, SEED.app_id)
    resp = await calling(service, phone["id"], "reset-password")
    assert resp.status == 200, await resp.text()
    new_password = service.sim.password(SEED.phone_number_id, SEED.app_id)
    assert new_password and new_password != old_password
    body = await resp.json()
    assert body["phone"]["trunk_needs_apply"] is True
    assert body["result"]["meta_settings"]["sip"]["servers"][0]["port"] == 5081
    async with service.services.sessions() as session:
        assert (await session.get(Phone, phone["id"])).sip_user_password == new_password


async def test_disable_then_show(service) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    assert (await calling(service, phone["id"], "enable")).status == 200
    resp = await calling(service, phone["id"], "disable")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["phone"]["calling_enabled"] is False and body["phone"]["sip_enabled"] is False
    # Meta keeps the server and its password when SIP is disabled
    assert body["result"]["meta_settings"]["sip"]["servers"][0]["hostname"] == HOST
    shown = await (await calling(service, phone["id"], "show")).json()
    assert shown["result"]["meta_settings"]["status"] == "DISABLED" and shown["result"]["ok"] is True
    assert shown["phone"]["trunk_needs_apply"] is True  # the trunk must drop this phone
    await clear_trunk_flag(service, phone["id"])
    # with SIP off the phone is not in the trunk: editing its SIP fields is not a trunk change
    resp = await service.patch(
        f"/api/admin/phones/{phone['id']}", json={"sip_hostname": "pbx9.example.com"}, headers=service.auth
    )
    assert (await resp.json())["trunk_needs_apply"] is False


async def test_token_check_reads_expiry_and_warns(service) -> None:  # type: ignore[no-untyped-def]
    service.sim.add_token("EAAGtemporary" + "t" * 20, SEED.app_id, type="USER", expires_in=2 * 24 * 3600)
    await make_phone(service, token="EAAGtemporary" + "t" * 20)
    resp = await service.post("/api/admin/wabas/1/check-token", headers=service.auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["token"]["is_valid"] is True and body["token"]["checked_with"] == "app"
    assert body["token"]["expires_at"] and "expires in 1 day" in body["waba"]["token_warning"]
    assert body["waba"]["token_expires_at"] == body["token"]["expires_at"]
    debug = [r for r in service.sim.requests if r["path"].endswith("/debug_token")]
    assert debug and debug[-1]["query"] == {"input_token": "EAAGtemporary" + "t" * 20}


async def test_cli_calling_show_and_enable(service, tmp_path: Path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    phone = await make_phone(service)
    graph_url = str(service.services.settings.meta_graph_url)
    env = {
        **os.environ,
        "THOTH_DATABASE_URL": database_url,
        "THOTH_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "THOTH_ADMIN_PASSWORD": "correct-horse-battery",
        "THOTH_META_GRAPH_URL": graph_url,
        "THOTH_ASTERISK_CONFIG_DIR": str(tmp_path / "asterisk"),
        "THOTH_CONFIG": "",
    }

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "thoth_pbx.cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli("calling", "enable", SEED.display_phone_number)
    assert code == 0, err
    assert '"ok": true' in out and service.sim.password(SEED.phone_number_id, SEED.app_id) not in out
    service.sim.fail_next(sim.FailRule(code=138018))
    code, out, err = await cli("calling", "show", SEED.phone_number_id)
    assert code == 1 and "prerequisites" in err and '"code": 138018' in out
    code, _, err = await cli("calling", "show", "+19999999999")
    assert code == 2 and "no phone" in err
    async with service.services.sessions() as session:
        stored = (await session.scalars(select(Phone))).one()
        assert stored.id == phone["id"] and stored.last_error["code"] == 138018
