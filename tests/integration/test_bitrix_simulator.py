"""The simulator is strict where the docs are: checked with plain HTTP, not with our client."""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import pytest

from tests.support.bitrix import USERS
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal, SimUser


@pytest.fixture
async def portal() -> AsyncIterator[tuple[BitrixSimulator, Portal, str, httpx.AsyncClient]]:
    sim = BitrixSimulator()
    await sim.start()
    portal = sim.add_portal(users=USERS)
    portal.installed = True
    token = sim.issue_tokens(portal)["access_token"]
    async with httpx.AsyncClient(base_url=portal.client_endpoint) as http:
        yield sim, portal, token, http
    await sim.stop()


async def rest(http: httpx.AsyncClient, token: str | None, method: str, **params: Any) -> tuple[int, Any]:
    body = dict(params)
    if token is not None:
        body["auth"] = token
    resp = await http.post(method, json=body)
    return resp.status_code, resp.json()


REG = {"USER_ID": 2, "PHONE_NUMBER": "+14155550100", "TYPE": 2, "LINE_NUMBER": "14155550123"}


async def test_register_checks_its_parameters_as_documented(portal) -> None:  # type: ignore[no-untyped-def]
    sim, _, token, http = portal
    cases = [
        ({k: v for k, v in REG.items() if k != "USER_ID"}, "USER_ID or USER_PHONE_INNER should be set"),
        ({**REG, "TYPE": 7}, "Unknown TYPE"),
        ({**REG, "CALL_START_DATE": "07.03.2026 10:20"}, "CALL_START_DATE should be in the ISO-8601 format"),
        ({**REG, "PHONE_NUMBER": "call me"}, "Unsupported phone number format"),
        ({**REG, "USER_ID": 4}, "User is not found or is not active"),
        ({**{k: v for k, v in REG.items() if k != "USER_ID"}, "USER_PHONE_INNER": "999"}, "User is not found or is not active"),
    ]
    for params, message in cases:
        status, body = await rest(http, token, "telephony.externalCall.register", **params)
        assert (status, body) == (400, {"error": "ERROR_CORE", "error_description": message})
    assert sim.recorder.count("telephony.externalcall.register", ok=False) == len(cases)


async def test_register_is_deduplicated_for_30_minutes_until_finished(portal) -> None:  # type: ignore[no-untyped-def]
    _, _, token, http = portal
    first = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.1"))[1]["result"]
    again = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.1",
                        CALL_START_DATE="2026-03-07T10:20:30+03:00"))[1]["result"]
    other = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.2"))[1]["result"]
    assert again["CALL_ID"] == first["CALL_ID"] != other["CALL_ID"]  # start date is not a dedup key
    status, body = await rest(http, token, "telephony.externalcall.finish", CALL_ID=first["CALL_ID"], USER_ID=2, DURATION=5)
    assert status == 200 and body["result"]["CALL_FAILED_CODE"] == "200"
    status, body = await rest(http, token, "telephony.externalcall.finish", CALL_ID=first["CALL_ID"], USER_ID=2)
    assert (status, body["error"]) == (400, "ERROR_CORE")
    assert body["error_description"] == "Call is not found (call should be registered prior to finishing)"
    after = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.1"))[1]["result"]
    assert after["CALL_ID"] != first["CALL_ID"]
    status, body = await rest(http, token, "telephony.externalcall.finish", CALL_ID=123, USER_ID=2)
    assert (status, body) == (400, {"error": "INVALID_ARGUMENT", "error_description": "CALL_ID must be a string"})


async def test_auth_methods_and_lines(portal) -> None:  # type: ignore[no-untyped-def]
    sim, p, token, http = portal
    assert await rest(http, None, "user.get") == (401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
    sim.expire_access_tokens(p)
    status, body = await rest(http, token, "user.get")
    assert (status, body["error"]) == (401, "expired_token")
    token = sim.issue_tokens(p)["access_token"]
    status, body = await rest(http, token, "no.such.method")
    assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    assert (await rest(http, token, "telephony.externalLine.add", NUMBER="14155550123", NAME="WA"))[1]["result"] == {"ID": 1}
    status, body = await rest(http, token, "telephony.externalLine.add", NUMBER="14155550123")
    assert (status, body["error_description"]) == (400, "Line already exists")
    status, body = await rest(http, token, "telephony.externalLine.update", NUMBER="14155550123")
    assert body["error_description"] == "There are no fields to update"
    assert (await rest(http, token, "telephony.externalLine.get"))[1]["result"] == [
        {"NUMBER": "14155550123", "NAME": "WA", "CRM_AUTO_CREATE": "Y"}]
    assert (await rest(http, token, "telephony.externalLine.delete", NUMBER="14155550123"))[1]["result"] == []
    status, body = await rest(http, token, "event.bind", event="ONNOTHING", handler="https://x.example/h")
    assert (status, body["error"]) == (400, "ERROR_EVENT_NOT_FOUND")


async def test_batch_limits_references_and_halt(portal) -> None:  # type: ignore[no-untyped-def]
    _, _, token, http = portal
    cmd = {f"u{i}": "user.get?FILTER[ID]=2" for i in range(51)}
    cmd["u3"] = "batch?cmd[x]=user.get"
    body = (await rest(http, token, "batch", halt=0, cmd=cmd))[1]["result"]
    assert len(body["result"]) == 49 and body["result"]["u0"][0]["ID"] == "2"
    assert body["result_error"]["u3"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert body["result_error"]["u50"]["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    chained = {
        "reg": "telephony.externalcall.register?USER_ID=2&PHONE_NUMBER=%2B14155550100&TYPE=2&EXTERNAL_CALL_ID=b.1",
        "bad": "telephony.externalcall.finish?CALL_ID=nope&USER_ID=2",
        "fin": "telephony.externalcall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=2",
    }
    body = (await rest(http, token, "batch", halt=1, cmd=chained))[1]["result"]
    assert list(body["result"]) == ["reg"] and list(body["result_error"]) == ["bad"]  # halt: fin never ran
    assert body["result_next"] == [] and body["result_total"] == []  # PHP's empty arrays
    body = (await rest(http, token, "batch", halt=0, cmd=chained))[1]["result"]
    assert body["result"]["fin"]["CALL_ID"] == body["result"]["reg"]["CALL_ID"]


async def test_list_paging_and_the_leaky_bucket(portal) -> None:  # type: ignore[no-untyped-def]
    sim, p, token, http = portal
    for uid in range(10, 130):
        p.users[uid] = SimUser(uid, f"U{uid}", extension=str(1000 + uid))
    first = (await rest(http, token, "user.get", FILTER={"ACTIVE": True}))[1]
    second = (await rest(http, token, "user.get", FILTER={"ACTIVE": True}, start=first["next"]))[1]
    third = (await rest(http, token, "user.get", FILTER={"ACTIVE": True}, start=second["next"]))[1]
    assert (first["total"], first["next"], second["next"], len(third["result"])) == (123, 50, 100, 23)
    assert "next" not in third
    statuses = [(await rest(http, token, "user.get", FILTER={"ID": 1}))[0] for _ in range(60)]
    assert statuses.count(503) >= 10 and statuses[:47] == [200] * 47  # 3 requests above already counted
    assert sim.recorder.errors("QUERY_LIMIT_EXCEEDED") == statuses.count(503)


async def test_oauth_server_rotates_and_refuses(portal) -> None:  # type: ignore[no-untyped-def]
    sim, p, _, _ = portal
    refresh = sim.issue_tokens(p)["refresh_token"]
    params = {"grant_type": "refresh_token", "client_id": sim.client_id, "client_secret": sim.client_secret,
              "refresh_token": refresh}
    async with httpx.AsyncClient() as http:
        wrong = await http.get(sim.oauth_url + "/", params={**params, "client_secret": "nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
        ok = (await http.get(sim.oauth_url + "/", params=params)).json()
        assert ok["member_id"] == p.member_id and ok["refresh_token"] != refresh and ok["client_endpoint"] == p.client_endpoint
        reused = await http.get(sim.oauth_url + "/", params=params)
        assert reused.json()["error"] == "invalid_grant"  # a refresh token works once
