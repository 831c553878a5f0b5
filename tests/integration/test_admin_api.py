"""Admin API over HTTP against real storage (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from thoth_pbx.clients.asterisk.ari import basic_auth_header

WABA = {
    "name": "Main account",
    "waba_id": "102290129340398",
    "access_token": "EAAGm0PX4ZCpsBAKZBxyz9xQ",
    "app_secret": "0123456789abcdef",
}


def auth(service) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": basic_auth_header(*service.admin_auth)}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_unauthenticated_and_wrong_password_get_401(service, method: str) -> None:  # type: ignore[no-untyped-def]
    for kwargs in (
        {},
        {"headers": {"Authorization": basic_auth_header("admin", "wrong-password")}},
        {"headers": {"Authorization": "Basic !!!"}},
    ):
        resp = await service.request(method, "/api/admin/wabas", json={} if method == "POST" else None, **kwargs)
        assert resp.status == 401
        assert (await resp.json())["error"]["field"] == "authorization"
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_waba_crud_masks_secrets_and_reveals_copy_values_once(service, json_logs) -> None:  # type: ignore[no-untyped-def]
    resp = await service.post("/api/admin/wabas", json=WABA, headers=auth(service))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["access_token"] == "EAAG…9xQ" and created["app_secret"] == "0123…def"
    assert len(created["verify_token"]) >= 32 and len(created["api_key"]) >= 32  # shown in full for copying
    listed = (await (await service.get("/api/admin/wabas", headers=auth(service))).json())["items"]
    assert listed[0]["verify_token"] != created["verify_token"] and "…" in listed[0]["verify_token"]
    body = str(listed) + await (await service.get(f"/api/admin/wabas/{created['id']}", headers=auth(service))).text()
    assert WABA["access_token"] not in body and WABA["app_secret"] not in body
    resp = await service.patch(f"/api/admin/wabas/{created['id']}", json={"name": "Renamed"}, headers=auth(service))
    assert resp.status == 200 and (await resp.json())["name"] == "Renamed"
    resp = await service.post(
        f"/api/admin/wabas/{created['id']}/rotate", json={"secret": "verify_token"}, headers=auth(service)
    )
    rotated = await resp.json()
    assert rotated["verify_token"] != created["verify_token"]
    assert (await service.delete(f"/api/admin/wabas/{created['id']}", headers=auth(service))).status == 204
    assert (await service.get(f"/api/admin/wabas/{created['id']}", headers=auth(service))).status == 404
    assert WABA["access_token"] not in json_logs.text and WABA["app_secret"] not in json_logs.text
    assert "admin created" in json_logs.text  # the logs did see the requests


async def test_every_generated_verify_token_is_unique(service) -> None:  # type: ignore[no-untyped-def]
    tokens = set()
    for i in range(5):
        resp = await service.post(
            "/api/admin/wabas", json={"name": f"A{i}", "access_token": "EAAG" + "x" * 20}, headers=auth(service)
        )
        tokens.add((await resp.json())["verify_token"])
    assert len(tokens) == 5


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({}, "name", 400),
        ({"name": "A", "access_token": "short"}, "access_token", 400),
        ({"name": "A", "access_token": "EAAG" + "x" * 20, "waba_id": "12ab"}, "waba_id", 400),
        ({"name": "A", "access_token": "EAAG" + "x" * 20, "verify_token": "mine"}, "verify_token", 400),
        ({"name": "A\nB", "access_token": "EAAG" + "x" * 20}, "name", 400),
        ({"name": "A", "access_token": "EAAG" + "x" * 20, "colour": "red"}, "colour", 400),
        ([1, 2], "body", 400),
    ],
)
async def test_waba_invalid_input_names_the_field(service, body, field: str, status: int) -> None:  # type: ignore[no-untyped-def]
    resp = await service.post("/api/admin/wabas", json=body, headers=auth(service))
    assert resp.status == status
    assert (await resp.json())["error"]["field"] == field
    listed = await (await service.get("/api/admin/wabas", headers=auth(service))).json()
    assert listed["items"] == []  # nothing half-written


async def test_phone_validation_uniqueness_and_references(service) -> None:  # type: ignore[no-untyped-def]
    waba = await (await service.post("/api/admin/wabas", json=WABA, headers=auth(service))).json()
    phone = {"number": "+1 415 555 0123", "phone_number_id": "106540352242922", "waba_account_id": waba["id"]}
    resp = await service.post("/api/admin/phones", json=phone, headers=auth(service))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (
        created["number"] == "+14155550123" and created["sip_port"] == 5061 and created["srtp_key_exchange"] == "SDES"
    )
    dup = await service.post("/api/admin/phones", json={**phone, "phone_number_id": "999"}, headers=auth(service))
    assert dup.status == 409 and (await dup.json())["error"]["field"] == "number"
    for bad, field in (
        ({**phone, "number": "12"}, "number"),
        ({**phone, "number": "+14155550999", "phone_number_id": "abc"}, "phone_number_id"),
        ({**phone, "number": "+14155550999", "phone_number_id": "5", "waba_account_id": 999}, "waba_account_id"),
        ({**phone, "number": "+14155550999", "phone_number_id": "5", "app_instance_id": 42}, "app_instance_id"),
        ({**phone, "number": "+14155550999", "phone_number_id": "5", "sip_hostname": "bad host"}, "sip_hostname"),
        ({**phone, "number": "+14155550999", "phone_number_id": "5", "sip_port": 0}, "sip_port"),
    ):
        resp = await service.post("/api/admin/phones", json=bad, headers=auth(service))
        assert resp.status == 400, (bad, await resp.text())
        assert (await resp.json())["error"]["field"] == field
    # a failed PATCH leaves the stored row as it was
    resp = await service.patch(
        f"/api/admin/phones/{created['id']}",
        json={"sip_hostname": "pbx.example.com", "sip_port": "x"},
        headers=auth(service),
    )
    assert resp.status == 400
    again = await (await service.get(f"/api/admin/phones/{created['id']}", headers=auth(service))).json()
    assert again["sip_hostname"] is None
    # an account with phones cannot be deleted
    resp = await service.delete(f"/api/admin/wabas/{waba['id']}", headers=auth(service))
    assert resp.status == 409 and (await resp.json())["error"]["field"] == "phones"


async def test_instances_crud(service) -> None:  # type: ignore[no-untyped-def]
    body = {"member_id": "a1b2c3", "domain": "acme.bitrix24.ru", "refresh_token": "refresh-token-1234567"}
    resp = await service.post("/api/admin/instances", json=body, headers=auth(service))
    assert resp.status == 201
    created = await resp.json()
    assert created["refresh_token"] == "refr…567" and created["status"] == "active"
    dup = await service.post("/api/admin/instances", json=body, headers=auth(service))
    assert dup.status == 409 and (await dup.json())["error"]["field"] == "member_id"
    assert (await service.get("/api/admin/instances/abc", headers=auth(service))).status == 404
    bad = await service.post(
        "/api/admin/instances", json={**body, "member_id": "z", "domain": "no_underscores.ru"}, headers=auth(service)
    )
    assert (await bad.json())["error"]["field"] == "domain"


async def test_healthz_reports_database_and_unreachable_asterisk(tmp_path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    import socket

    from tests.conftest import make_settings
    from thoth_pbx.app import build_app, open_services

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        tmp_path, THOTH_AMI_URL=f"tcp://u:p@127.0.0.1:{port}", THOTH_ARI_URL=f"http://u:p@127.0.0.1:{port}"
    )
    services = await open_services(settings)
    client = await aiohttp_client(build_app(services))
    first_error = await _wait_for_state(services, "down")
    assert first_error
    body = await (await client.get("/healthz")).json()
    assert body["status"] == "degraded" and body["database"]["state"] == "ok"
    assert body["ami"]["state"] == "down" and body["ari"]["state"] == "down"
    assert "refused" in body["ami"]["error"].lower() or "connect" in body["ami"]["error"].lower()


async def _wait_for_state(services, state: str) -> str:  # type: ignore[no-untyped-def]
    import asyncio

    async def poll() -> str:
        while services.ami.status.state != state or services.ari.status.state != state:
            await asyncio.sleep(0.02)  # polling a status flag; the supervisor sets it
        return services.ami.status.error or ""

    return await asyncio.wait_for(poll(), 10)


async def test_failed_logins_are_throttled_and_logged(settings, aiohttp_client, json_logs) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.test_login_throttle import Clock
    from thoth_pbx.app import build_app, open_services
    from thoth_pbx.web.login_throttle import LoginThrottle

    clock = Clock()
    services = await open_services(settings)
    client = await aiohttp_client(
        build_app(services, login_throttle=LoginThrottle(max_failures=5, window_s=300, clock=clock))
    )
    wrong = {"Authorization": basic_auth_header("admin", "guess-number-x")}
    right = {"Authorization": basic_auth_header("admin", "correct-horse-battery")}
    assert (await client.get("/api/admin/wabas")).status == 401  # no credentials: not a failed login
    for _ in range(5):
        assert (await client.get("/api/admin/wabas", headers=wrong)).status == 401
    refused = await client.get("/api/admin/wabas", headers=right)
    assert refused.status == 429 and refused.headers["Retry-After"] == "300"
    assert (await refused.json())["error"]["field"] == "authorization"
    clock.now += 300
    assert (await client.get("/api/admin/wabas", headers=right)).status == 200
    assert json_logs.text.count("admin login failed") == 5
    assert "guess-number-x" not in json_logs.text and '"user_known": true' in json_logs.text
