"""The simulator is strict where the docs are: checked with plain HTTP, not with our client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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
        (
            {**{k: v for k, v in REG.items() if k != "USER_ID"}, "USER_PHONE_INNER": "999"},
            "User is not found or is not active",
        ),
    ]
    for params, message in cases:
        status, body = await rest(http, token, "telephony.externalCall.register", **params)
        assert (status, body) == (400, {"error": "ERROR_CORE", "error_description": message})
    assert sim.recorder.count("telephony.externalcall.register", ok=False) == len(cases)


async def test_register_is_deduplicated_for_30_minutes_until_finished(portal) -> None:  # type: ignore[no-untyped-def]
    _, _, token, http = portal
    first = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.1"))[1]["result"]
    again = (
        await rest(
            http,
            token,
            "telephony.externalcall.register",
            **REG,
            EXTERNAL_CALL_ID="a.1",
            CALL_START_DATE="2026-03-07T10:20:30+03:00",
        )
    )[1]["result"]
    other = (await rest(http, token, "telephony.externalcall.register", **REG, EXTERNAL_CALL_ID="a.2"))[1]["result"]
    assert again["CALL_ID"] == first["CALL_ID"] != other["CALL_ID"]  # start date is not a dedup key
    status, body = await rest(
        http, token, "telephony.externalcall.finish", CALL_ID=first["CALL_ID"], USER_ID=2, DURATION=5
    )
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
    assert await rest(http, None, "user.get") == (
        401,
        {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )
    sim.expire_access_tokens(p)
    status, body = await rest(http, token, "user.get")
    assert (status, body["error"]) == (401, "expired_token")
    token = sim.issue_tokens(p)["access_token"]
    status, body = await rest(http, token, "no.such.method")
    assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    assert (await rest(http, token, "telephony.externalLine.add", NUMBER="14155550123", NAME="WA"))[1]["result"] == {
        "ID": 1
    }
    status, body = await rest(http, token, "telephony.externalLine.add", NUMBER="14155550123")
    assert (status, body["error_description"]) == (400, "Line already exists")
    status, body = await rest(http, token, "telephony.externalLine.update", NUMBER="14155550123")
    assert body["error_description"] == "There are no fields to update"
    assert (await rest(http, token, "telephony.externalLine.get"))[1]["result"] == [
        {"NUMBER": "14155550123", "NAME": "WA", "CRM_AUTO_CREATE": "Y"}
    ]
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
    params = {
        "grant_type": "refresh_token",
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "refresh_token": refresh,
    }
    async with httpx.AsyncClient() as http:
        wrong = await http.get(sim.oauth_url + "/", params={**params, "client_secret": "nope"})
        assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
        ok = (await http.get(sim.oauth_url + "/", params=params)).json()
        assert (
            ok["member_id"] == p.member_id
            and ok["refresh_token"] != refresh
            and ok["client_endpoint"] == p.client_endpoint
        )
        reused = await http.get(sim.oauth_url + "/", params=params)
        assert reused.json()["error"] == "invalid_grant"  # a refresh token works once


async def test_incoming_webhook_is_authorised_by_its_path_within_its_scopes(portal) -> None:  # type: ignore[no-untyped-def]
    """`/rest/<user_id>/<code>/<method>[.json]` needs no `auth`; a wrong id or code is 401 INVALID_CREDENTIALS.

    https://apidocs.bitrix24.com/local-integrations/local-webhooks.html (URL structure, scopes),
    https://apidocs.bitrix24.com/api-reference/crm/universal/import/crm-item-import.html (401 for a wrong
    ID or code in the path), https://apidocs.bitrix24.com/api-reference/common/system/app-info.html,
    https://apidocs.bitrix24.com/settings/how-to-call-rest-api/batch.html
    """
    sim, p, _, _ = portal
    hook = sim.add_webhook(p, user_id=1, scope="user", code="abc123")
    assert sim.webhook_url(p, hook) == f"{p.client_endpoint}1/abc123/"
    async with httpx.AsyncClient(base_url=sim.webhook_url(p, hook)) as http:
        for path in ("user.get.json", "user.get", "user.get/"):
            resp = await http.post(path, json={"FILTER": {"ID": 2}})
            assert resp.status_code == 200 and [u["ID"] for u in resp.json()["result"]] == ["2"]
        resp = await http.get("user.get.json", params={"FILTER[ID]": "3"})
        assert [u["ID"] for u in resp.json()["result"]] == ["3"]
        resp = await http.post("telephony.externalLine.get.json", json={})
        assert (resp.status_code, resp.json()) == (
            403,
            {
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the webhook token",
            },
        )
        resp = await http.post("app.info", json={})  # needs an application's context
        assert (resp.status_code, resp.json()) == (
            400,
            {"error": "ACCESS_DENIED", "error_description": "Access denied! Application context required"},
        )
        cmd = {"u": "user.get?FILTER[ID]=2", "t": "telephony.externalLine.get"}
        resp = await http.post("batch.json", json={"halt": 0, "cmd": cmd})
        body = resp.json()["result"]
        assert resp.status_code == 200 and body["result"]["u"][0]["ID"] == "2"
        assert body["result_error"]["t"]["error"] == "insufficient_scope"
    async with httpx.AsyncClient(base_url=p.client_endpoint) as http:
        for path in ("1/nope/user.get.json", "2/abc123/user.get", "1/abc123x/batch"):
            resp = await http.post(path, json={"auth": sim.issue_tokens(p)["access_token"]})  # a token does not help
            assert (resp.status_code, resp.json()) == (
                401,
                {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
            )
    sms = sim.add_webhook(p, scope="messageservice")
    async with httpx.AsyncClient(base_url=sim.webhook_url(p, sms)) as http:
        resp = await http.post("messageservice.sender.list", json={})  # messageservice-sender-list.md
        assert (resp.status_code, resp.json()) == (
            400,
            {"error": "ACCESS_DENIED", "error_description": "Application context required"},
        )
    assert {e.caller for e in sim.recorder.calls("user.get")} == {hook.caller}


async def test_user_get_filter_prefixes_and_top_level_fields(portal) -> None:  # type: ignore[no-untyped-def]
    """FILTER keys carry the documented prefixes; without FILTER the top-level keys filter.

    https://apidocs.bitrix24.com/api-reference/user/user-get.html (FILTER prefixes `>=`, `>`, `<=`,
    `<`, `@`, `!@`, `%`, `=%`, `%=`, `!%`, `!=%`, `!%=`, `=`, `!=`, `!`; `{"NAME": "Iv%"}` finds names
    starting with Iv; the cURL examples pass filter fields at the top level)
    """
    _, _, token, http = portal

    async def ids(**params: Any) -> list[str]:
        status, body = await rest(http, token, "user.get", **params)
        assert status == 200, body
        return [u["ID"] for u in body["result"]]

    # Anna Admin 1, Boris Agent 2, Vera Agent 3, Gone Former 4 (inactive)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({">ID": 2}, ["3", "4"]),
        ({">=ID": "2"}, ["2", "3", "4"]),
        ({"<ID": 2}, ["1"]),
        ({"<=ID": 2}, ["1", "2"]),
        ({"!ID": 1}, ["2", "3", "4"]),
        ({"!=ID": [1, 2]}, ["3", "4"]),
        ({"@ID": [1, 3]}, ["1", "3"]),
        ({"!@ID": [1, 3]}, ["2", "4"]),
        ({"=ID": 2}, ["2"]),
        ({"%NAME": "ann"}, ["1"]),
        ({"%LAST_NAME": "gen"}, ["2", "3"]),
        ({"!%LAST_NAME": "gen"}, ["1", "4"]),
        ({"NAME": "Bo%"}, ["2"]),
        ({"=NAME": "Bo%"}, []),
        ({"=NAME": "boris"}, ["2"]),
        ({"=%NAME": "%ra"}, ["3"]),
        ({"%=NAME": "V%"}, ["3"]),
        ({"!=%NAME": "%a"}, ["2", "4"]),
        ({"!%=NAME": "%a"}, ["2", "4"]),
        ({"USER_TYPE": "employee", "ACTIVE": True, ">ID": 1}, ["2", "3"]),
        ({"ACTIVE": False}, ["4"]),
        ({"UF_PHONE_INNER": "101"}, ["2"]),
        ({"<UF_PHONE_INNER": "102"}, ["1", "2"]),
        ({"EMAIL": "user3@example.com"}, ["3"]),
        ({"NO_SUCH_FIELD": 1, "ID": 2}, ["2"]),  # Bitrix drops keys outside its user fields
    ]
    for flt, expected in cases:
        assert await ids(FILTER=flt) == expected, flt
    assert await ids(ID=3) == ["3"]  # legacy: no FILTER, so the top-level keys filter
    assert await ids(**{">ID": 2, "filter": {"ID": 1}}) == ["1"]  # with FILTER the top level is ignored
    status, body = await rest(http, token, "user.get", FILTER={"~ID": 1})
    assert (status, body) == (
        400,
        {"error": "ERROR_CORE", "error_description": "Unknown filter operation '~' for field ID"},
    )
    status, body = await rest(
        http, token, "batch", cmd={"a": "user.get?FILTER[>ID]=2", "b": "user.get?FILTER[%25NAME]=ver"}
    )
    assert [[u["ID"] for u in body["result"]["result"][k]] for k in ("a", "b")] == [["3", "4"], ["3"]]


async def test_start_minus_one_skips_the_count(portal) -> None:  # type: ignore[no-untyped-def]
    """`start=-1`: the first 50 rows, no `next`, and `total` 0 as the page's example answer shows.

    https://apidocs.bitrix24.com/settings/performance/huge-data.html (select pages by `>ID` with
    `start = -1`; the answer without the count shows `[total] => 0` and no `next`)
    """
    _, p, token, http = portal
    for uid in range(10, 130):
        p.users[uid] = SimUser(uid, f"U{uid}", extension=str(1000 + uid))
    status, body = await rest(http, token, "user.get", FILTER={"ACTIVE": True}, start=-1)
    assert status == 200 and body["total"] == 0 and "next" not in body
    assert [u["ID"] for u in body["result"]] == [str(i) for i in (1, 2, 3, *range(10, 57))]
    seen, last = [], 0
    while True:  # the loop the page recommends
        page = (await rest(http, token, "user.get", FILTER={"ACTIVE": True, ">ID": last}, start=-1))[1]["result"]
        seen += [u["ID"] for u in page]
        if len(page) < 50:
            break
        last = int(page[-1]["ID"])
    assert len(seen) == 123 and len(set(seen)) == 123
    batch = (await rest(http, token, "batch", cmd={"a": "user.get?start=-1", "b": "user.get?start=50"}))[1]["result"]
    assert batch["result_total"] == {"a": 0, "b": 124} and batch["result_next"] == {"b": 100}


async def test_operating_is_the_methods_time_in_ten_minute_baskets() -> None:
    """`time.operating` sums the method's execution time per app or webhook over ten one-minute
    baskets; `operating_reset_at` is when the oldest drops out; over the limit the next call is 429.

    https://apidocs.bitrix24.com/settings/performance/limits.html (Resource Intensity Limits),
    https://apidocs.bitrix24.com/api-reference/data-types.html (time.operating)
    """
    now = [1_800_000_005.0]  # 5 s into a minute
    sim = BitrixSimulator(clock=lambda: now[0], operating_limit=10.0)
    sim.method_cost["user.get"] = 4.0  # every user.get takes 4 s of the portal's time
    await sim.start()
    try:
        p = sim.add_portal(users=USERS)
        token = sim.issue_tokens(p)["access_token"]
        hook = sim.add_webhook(p, scope="user")
        async with httpx.AsyncClient(base_url=p.client_endpoint) as http:

            async def timing(method: str, path: str = "", auth: str | None = token) -> tuple[int, Any]:
                status, body = await rest(http, auth, path + method)
                return status, body.get("time", body)

            t0 = now[0]
            status, first = await timing("user.get")
            assert (status, first["operating"], first["operating_reset_at"]) == (200, 4.0, t0 + 600)
            now[0] += 60
            assert (await timing("user.get"))[1]["operating"] == 8.0
            assert (await timing("telephony.externalLine.get"))[1]["operating"] == 0  # per method
            assert (await timing("user.get", f"{hook.user_id}/{hook.code}/", None))[1][
                "operating"
            ] == 4.0  # per webhook
            now[0] += 60
            _, third = await timing("user.get")  # 8 s used before it ran: under the limit
            assert (third["operating"], third["operating_reset_at"]) == (12.0, t0 + 600)
            status, body = await timing("user.get")
            assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT")
            now[0] = t0 + 600  # the first basket (4 s) drops out: 8 s, under the limit again
            _, after = await timing("user.get")
            assert (after["operating"], after["operating_reset_at"]) == (12.0, t0 + 660)
            assert sim.operating(p, "user.get") == 12.0
            batch = (await rest(http, token, "batch", cmd={"u": "telephony.externalLine.get"}))[1]
            assert batch["time"]["operating"] == 0  # the outer batch is not accounted
    finally:
        await sim.stop()


async def test_app_info_answers_the_documented_fields(portal) -> None:  # type: ignore[no-untyped-def]
    """app.info (scope basic) returns every field of its page, whatever scopes the app has.

    https://apidocs.bitrix24.com/api-reference/common/system/app-info.html
    """
    sim, p, token, http = portal
    p.scope = "telephony"
    status, body = await rest(http, token, "app.info")
    assert status == 200
    info = body["result"]
    assert set(info) == {
        "ID",
        "CODE",
        "VERSION",
        "STATUS",
        "INSTALLED",
        "PAYMENT_EXPIRED",
        "DAYS",
        "LANGUAGE_ID",
        "LICENSE",
        "LICENSE_TYPE",
        "LICENSE_FAMILY",
    }
    assert (info["CODE"], info["STATUS"], info["INSTALLED"], info["PAYMENT_EXPIRED"]) == (sim.client_id, "L", True, "N")
    assert info["LICENSE"] == f"{info['LANGUAGE_ID']}_{info['LICENSE_TYPE']}"


def test_the_standalone_simulator_prints_a_working_incoming_webhook(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`thoth-pbx sandbox bitrix --webhook 2:user` as a newcomer runs it: the printed URL answers
    user.get with no auth parameter (apidocs.bitrix24.com/local-integrations/local-webhooks.html)."""
    import json
    import subprocess
    import urllib.request

    from tests.support.cli import CLI, free_port

    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "sandbox", "bitrix", "--listen", f"127.0.0.1:{port}", "--webhook", "2:user"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = ""
        while "webhook of user 2" not in line:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, proc.stderr.read()  # type: ignore[union-attr]
        url = line.rsplit(": ", 1)[1].strip()
        with urllib.request.urlopen(f"{url}user.get.json", timeout=10) as resp:
            users = json.load(resp)["result"]
        assert {u["ID"] for u in users} >= {"1", "2", "3"}
        with urllib.request.urlopen(f"{url}telephony.externalline.get.json", timeout=10) as resp:
            raise AssertionError("a user-scope webhook must not reach telephony")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403 and json.load(exc)["error"] == "insufficient_scope"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    bad = subprocess.run(
        [*CLI, "sandbox", "bitrix", "--listen", f"127.0.0.1:{free_port()}", "--webhook", "99"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "webhook" in bad.stderr and "99" in bad.stderr
