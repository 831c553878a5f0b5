"""The Graph client against the Meta simulator, and the simulator's strictness (loopback HTTP)."""

from __future__ import annotations

import time

import pytest

from tests.support.graph_sim import graph_on_simulator
from thoth_pbx.clients.meta.graph import (
    GraphAuthError,
    GraphClient,
    GraphError,
    GraphRateLimited,
    GraphUnavailable,
    RetryPolicy,
)
from thoth_pbx.sandbox import meta as sim

SEED = sim.Seed()
PNID = SEED.phone_number_id
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
async def graph(aiohttp_server):  # type: ignore[no-untyped-def]
    async with graph_on_simulator(aiohttp_server, SEED, FAST) as client:
        yield client


async def settings(graph, **calling):  # type: ignore[no-untyped-def]
    return await graph.post(f"{PNID}/settings", SEED.token, {"calling": calling}, idempotent=True)


async def error_of(coro) -> GraphError:  # type: ignore[no-untyped-def]
    with pytest.raises(GraphError) as info:
        await coro
    return info.value


async def test_auth_errors_follow_graph(graph) -> None:  # type: ignore[no-untyped-def]
    missing = await error_of(graph.request("GET", f"{PNID}/settings", ""))
    assert isinstance(missing, GraphAuthError) and missing.code == 104 and missing.type == "OAuthException"
    bad = await error_of(graph.get(f"{PNID}/settings", "EAAGnot-a-token"))
    assert isinstance(bad, GraphAuthError) and (bad.code, bad.http_status) == (190, 401) and bad.fbtrace_id
    graph.sim.add_token("EAAGold", SEED.app_id, expires_at=int(time.time()) - 60)
    expired = await error_of(graph.get(f"{PNID}/settings", "EAAGold"))
    assert (expired.code, expired.subcode) == (190, 463)
    graph.sim.add_token("EAAGreadonly", SEED.app_id, scopes=["whatsapp_business_messaging"])
    assert (await error_of(graph.get(f"{PNID}/settings", "EAAGreadonly"))).code == 10
    graph.sim.add_token("EAAGotherwaba", SEED.app_id, waba_ids=["1"])
    other = await error_of(graph.get(f"{PNID}/settings", "EAAGotherwaba"))
    assert (other.code, other.subcode) == (100, 33)


@pytest.mark.parametrize(
    ("calling", "words"),
    [
        ({"status": "ENABLED", "colour": "red"}, "calling[colour]"),
        ({"status": "ON"}, "calling[status]"),
        ({"sip": {"status": "ENABLED", "servers": [{"hostname": "a.example.com", "password": "x"}]}}, "[password]"),
        ({"sip": {"status": "ENABLED", "servers": [{"port": 5061}]}}, "[hostname] is required"),
        (
            {"sip": {"status": "ENABLED", "servers": [{"hostname": "a.example.com"}, {"hostname": "b.example.com"}]}},
            "Only one SIP server",
        ),
        ({"sip": {"status": "ENABLED"}}, "At least one SIP server"),
        ({"sip": {"status": "ENABLED", "servers": [{"hostname": "a.example.com", "port": 70000}]}}, "port"),
        (
            {
                "sip": {
                    "status": "ENABLED",
                    "servers": [{"hostname": "a.example.com", "request_uri_user_params": {"tgrp": "x" * 129}}],
                }
            },
            "128",
        ),
        ({"audio": {"additional_codecs": ["OPUS"]}}, "PCMA"),
        ({"srtp_key_exchange_protocol": "ZRTP"}, "srtp_key_exchange_protocol"),
        ({"call_hours": {"status": "ENABLED", "timezone_id": "Europe/Berlin", "weekly_operating_hours": []}}, "empty"),
        (
            {
                "call_hours": {
                    "status": "ENABLED",
                    "timezone_id": "Europe/Berlin",
                    "weekly_operating_hours": [
                        {"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200"},
                        {"day_of_week": "MONDAY", "open_time": "1100", "close_time": "1400"},
                    ],
                }
            },
            "overlap",
        ),
    ],
)
async def test_settings_are_validated_like_graph(graph, calling, words: str) -> None:  # type: ignore[no-untyped-def]
    exc = await error_of(settings(graph, **calling))
    assert exc.code == 100 and exc.http_status == 400 and words in (exc.details or ""), exc.details
    assert graph.sim.phones[PNID].servers == {}  # a refused update changes nothing


async def test_calling_preconditions(graph) -> None:  # type: ignore[no-untyped-def]
    phone = graph.sim.phones[PNID]
    phone.messaging_limit = 1000
    assert (await error_of(settings(graph, status="ENABLED"))).code == 138015
    phone.messaging_limit = 2000
    graph.sim.apps[SEED.app_id].subscribed_fields = {"messages"}
    assert (await error_of(settings(graph, status="ENABLED"))).code == 138018  # neither SIP nor the calls field
    assert await settings(
        graph, status="ENABLED", sip={"status": "ENABLED", "servers": [{"hostname": "pbx.example.com"}]}
    ) == {"success": True}


async def test_settings_round_trip_password_per_app_and_reset(graph) -> None:  # type: ignore[no-untyped-def]
    await settings(graph, status="ENABLED", sip={"status": "ENABLED", "servers": [{"hostname": "pbx.example.com"}]})
    plain = await graph.get(f"{PNID}/settings", SEED.token)
    assert plain["calling"]["sip"]["servers"] == [{"app_id": SEED.app_id, "hostname": "pbx.example.com", "port": 5061}]
    assert "srtp_key_exchange_protocol" not in plain["calling"]  # omitted unless set explicitly
    creds = await graph.get(f"{PNID}/settings", SEED.token, {"include_sip_credentials": "true"})
    password = creds["calling"]["sip"]["servers"][0]["sip_user_password"]
    # a second app's token sees the server but never our password
    graph.sim.add_app("2000000000000002", "second-secret-123456")
    graph.sim.add_token("EAAGsecondapp", "2000000000000002")
    seen = await graph.get(f"{PNID}/settings", "EAAGsecondapp", {"include_sip_credentials": "true"})
    assert "sip_user_password" not in seen["calling"]["sip"]["servers"][0]
    # DISABLED keeps servers and password; clearing servers resets the password
    await settings(graph, status="DISABLED", sip={"status": "DISABLED"})
    kept = await graph.get(f"{PNID}/settings", SEED.token, {"include_sip_credentials": "true"})
    assert kept["calling"]["sip"]["servers"][0]["sip_user_password"] == password
    await settings(graph, sip={"status": "DISABLED", "servers": []})
    await settings(
        graph,
        status="ENABLED",
        sip={"status": "ENABLED", "servers": [{"hostname": "pbx.example.com"}]},
        srtp_key_exchange_protocol="SDES",
    )
    renewed = await graph.get(f"{PNID}/settings", SEED.token, {"include_sip_credentials": "true"})
    assert renewed["calling"]["sip"]["servers"][0]["sip_user_password"] != password
    assert renewed["calling"]["srtp_key_exchange_protocol"] == "SDES"


async def test_calls_refused_on_sip_numbers(graph) -> None:  # type: ignore[no-untyped-def]
    call = {
        "messaging_product": "whatsapp",
        "to": "15551234567",
        "action": "connect",
        "session": {"sdp_type": "offer", "sdp": "v=0"},
    }
    assert (await error_of(graph.post(f"{PNID}/calls", SEED.token, call))).code == 138000
    await settings(graph, status="ENABLED", sip={"status": "ENABLED", "servers": [{"hostname": "pbx.example.com"}]})
    exc = await error_of(graph.post(f"{PNID}/calls", SEED.token, call))
    assert exc.code == 131055 and "SIP enabled" in exc.message


async def test_messages_endpoint(graph) -> None:  # type: ignore[no-untyped-def]
    ok = await graph.post(
        f"{PNID}/messages",
        SEED.token,
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15551234567",
            "type": "text",
            "text": {"preview_url": False, "body": "hello"},
        },
    )
    assert ok["messages"][0]["id"].startswith("wamid.") and ok["contacts"] == [
        {"input": "15551234567", "wa_id": "15551234567"}
    ]
    assert graph.sim.phones[PNID].sent[0]["text"]["body"] == "hello"
    bad = await error_of(
        graph.post(f"{PNID}/messages", SEED.token, {"messaging_product": "sms", "to": "1555", "type": "text"})
    )
    assert bad.code == 100


async def test_fail_next_and_retries(graph) -> None:  # type: ignore[no-untyped-def]
    graph.sim.fail_next(sim.FailRule(code=131000, times=2))
    assert "calling" in await graph.get(f"{PNID}/settings", SEED.token)  # retried twice, third try succeeds
    graph.sim.fail_next(sim.FailRule(code=131000))
    body = {"messaging_product": "whatsapp", "to": "15551234567", "type": "text", "text": {"body": "once"}}
    exc = await error_of(graph.post(f"{PNID}/messages", SEED.token, body))
    assert exc.code == 131000 and exc.http_status == 500  # a message POST is never repeated after a 5xx
    assert graph.sim.phones[PNID].sent == []
    graph.sim.fail_next(sim.FailRule(code=130429))
    assert (await graph.post(f"{PNID}/messages", SEED.token, body))["messages"]  # throttled: repeating is safe
    graph.sim.fail_next(sim.FailRule(code=4, times=5))
    assert isinstance(await error_of(graph.get(f"{PNID}/settings", SEED.token)), GraphRateLimited)
    graph.sim.failures.clear()
    graph.sim.fail_next(sim.FailRule(code=138018, subcode=2593001, message="custom", details="why", http_status=400))
    exc = await error_of(settings(graph, status="DISABLED"))
    assert (exc.code, exc.subcode, exc.message, exc.details, exc.http_status) == (138018, 2593001, "custom", "why", 400)
    assert exc.fbtrace_id


async def test_network_failure_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GraphClient(f"http://127.0.0.1:{port}", "v25.0", retry=FAST)
    try:
        exc = await error_of(client.get("1/settings", SEED.token))
        assert isinstance(exc, GraphUnavailable) and exc.code is None
    finally:
        await client.close()


async def test_debug_token(graph) -> None:  # type: ignore[no-untyped-def]
    from thoth_pbx.features.directory.tokens import debug_token

    graph.sim.add_token("EAAGtemp", SEED.app_id, type="USER", expires_in=3600)
    info = await debug_token(graph, "EAAGtemp", SEED.app_id, SEED.app_secret)
    assert info.is_valid and info.type == "USER" and info.expires_at is not None and info.checked_with == "app"
    own = await debug_token(graph, SEED.token, None, None)
    assert own.is_valid and own.expires_at is None and own.checked_with == "token"
    unknown = await debug_token(graph, "EAAGunknown", SEED.app_id, SEED.app_secret)
    assert not unknown.is_valid and "190" in (unknown.error or "")
    assert (await error_of(debug_token(graph, "EAAGtemp", SEED.app_id, "wrong-secret"))).code == 190


async def test_control_endpoints_and_webhook_sender(aiohttp_client, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Hub-Signature-256"]))
        return web.Response(text="ok")

    target = web.Application()
    target.router.add_post("/hook", hook)
    hook_server = await aiohttp_server(target)
    control = await aiohttp_client(sim.MetaSimulator().app())
    assert (await control.post("/_sandbox/apps", json={"app_id": "7", "app_secret": "s" * 12})).status == 201
    assert (await control.post("/_sandbox/tokens", json={"token": "EAAGx", "app_id": "8"})).status == 400
    assert (
        await control.post(
            "/_sandbox/phones", json={"phone_number_id": "5", "display_phone_number": "+1555", "waba_id": "9"}
        )
    ).status == 201
    assert (await control.patch("/_sandbox/phones/5", json={"messaging_limit": 10})).status == 200
    assert (await (await control.get("/_sandbox/state")).json())["phones"]["5"]["messaging_limit"] == 10
    docs = [sim.delivery("9", [sim.message_change("5", "+1555", "1666", f"m{i}")]) for i in range(2)]
    resp = await control.post(
        "/_sandbox/webhooks",
        json={"url": str(hook_server.make_url("/hook")), "app_secret": "s" * 12, "deliveries": docs, "duplicate": True},
    )
    assert (await resp.json())["statuses"] == [200] * 4
    assert [r[0] for r in received][0] == received[1][0]  # duplicated as is
    assert all(signature == sim.sign(body, "s" * 12) for body, signature in received)
    received.clear()
    sender = sim.WebhookSender(str(hook_server.make_url("/hook")), "s" * 12)
    await sender.send([b'{"a":1}'], corrupt_signature=True)
    assert received[0][1] != sim.sign(b'{"a":1}', "s" * 12)


async def test_read_receipt_and_typing_indicator(graph) -> None:  # type: ignore[no-untyped-def]
    """developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read and
    developers.facebook.com/docs/whatsapp/cloud-api/typing-indicators: `{"messaging_product",
    "status": "read", "message_id"[, "typing_indicator": {"type": "text"}]}` -> `{"success": true}`,
    for a message the number received."""
    change = sim.message_change(PNID, SEED.display_phone_number, "15551234567", "hi", wamid="wamid.IN1")
    graph.sim.announce(sim.delivery(SEED.waba_id, [change]))
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1"}
    assert await graph.post(f"{PNID}/messages", SEED.token, read) == {"success": True}
    typing = {**read, "typing_indicator": {"type": "text"}}
    assert await graph.post(f"{PNID}/messages", SEED.token, typing) == {"success": True}
    assert [r.get("typing_indicator") for r in graph.sim.phones[PNID].read] == [None, {"type": "text"}]
    for bad, words in (
        ({**read, "message_id": "wamid.NEVER"}, "not a message received"),
        ({**read, "status": "delivered"}, "status must be read"),
        ({**typing, "typing_indicator": {"type": "audio"}}, "typing_indicator[type]"),
        ({**read, "to": "15551234567"}, "[to] is not a valid parameter"),
    ):
        exc = await error_of(graph.post(f"{PNID}/messages", SEED.token, bad))
        assert exc.code == 100 and words in str(exc.details), (bad, exc.details)


async def test_phone_number_node_and_waba_list(graph) -> None:  # type: ignore[no-untyped-def]
    """developers.facebook.com/docs/whatsapp/business-management-api/manage-phone-numbers:
    `GET /{phone_number_id}` (fields selectable) and `GET /{waba_id}/phone_numbers` with Graph paging."""
    node = await graph.get(PNID, SEED.token)
    assert node["id"] == PNID and node["verified_name"] == "Sandbox Business" and node["quality_rating"] == "GREEN"
    assert node["display_phone_number"] == "+1 555-010-0001" and node["throughput"] == {"level": "STANDARD"}
    assert await graph.get(PNID, SEED.token, {"fields": "verified_name"}) == {
        "verified_name": "Sandbox Business",
        "id": PNID,
    }
    exc = await error_of(graph.get(PNID, SEED.token, {"fields": "verified_name,nonsense"}))
    assert exc.code == 100 and "nonsense" in exc.message
    graph.sim.add_phone("106540352242999", "+15550100002", SEED.waba_id)
    listed = await graph.get(f"{SEED.waba_id}/phone_numbers", SEED.token)
    assert [p["id"] for p in listed["data"]] == [PNID, "106540352242999"] and "cursors" in listed["paging"]
    assert (await error_of(graph.get("999999999/phone_numbers", SEED.token))).code == 100
    graph.sim.add_token("EAAGother", SEED.app_id, waba_ids=["555"])
    assert (await error_of(graph.get(f"{SEED.waba_id}/phone_numbers", "EAAGother"))).code == 100
    assert (await error_of(graph.get(PNID, "EAAGother"))).code == 100


async def test_call_permissions(graph) -> None:  # type: ignore[no-untyped-def]
    """developers.facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions:
    `GET /{phone_number_id}/call_permissions?user_wa_id=` -> permission + actions with limits."""
    none = await graph.get(f"{PNID}/call_permissions", SEED.token, {"user_wa_id": "15551234567"})
    assert none["messaging_product"] == "whatsapp" and none["permission"] == {"status": "no_permission"}
    actions = {a["action_name"]: a for a in none["actions"]}
    assert actions["start_call"]["can_perform_action"] is False
    assert actions["send_call_permission_request"]["limits"][0] == {
        "time_period": "PT24H",
        "max_allowed": 1,
        "current_usage": 0,
    }
    until = int(time.time()) + 7 * 86400
    graph.sim.phones[PNID].call_permissions["15551234567"] = {"status": "temporary", "expiration_time": until}
    granted = await graph.get(f"{PNID}/call_permissions", SEED.token, {"user_wa_id": "15551234567"})
    assert granted["permission"] == {"status": "temporary", "expiration_time": until}
    assert {a["action_name"]: a["can_perform_action"] for a in granted["actions"]}["start_call"] is True
    assert (await error_of(graph.get(f"{PNID}/call_permissions", SEED.token))).code == 100


async def test_call_actions_only_for_calls_it_announced(graph) -> None:  # type: ignore[no-untyped-def]
    """developers.facebook.com/docs/whatsapp/cloud-api/calling/user-initiated-calls: pre_accept,
    accept, reject and terminate name a call_id from a `connect` webhook (or a placed call)."""
    await settings(graph, status="ENABLED")
    act = {
        "messaging_product": "whatsapp",
        "action": "accept",
        "call_id": "wacid.NEVER",
        "session": {"sdp_type": "answer", "sdp": "v=0"},
    }
    exc = await error_of(graph.post(f"{PNID}/calls", SEED.token, act))
    assert exc.code == 100 and "wacid.NEVER" in str(exc.details)
    connect = sim.call_connect_change(PNID, SEED.display_phone_number, "wacid.ANNOUNCED", "15551234567")
    graph.sim.announce(sim.delivery(SEED.waba_id, [connect]))
    assert (await graph.post(f"{PNID}/calls", SEED.token, {**act, "call_id": "wacid.ANNOUNCED"}))["success"] is True
    end = {"messaging_product": "whatsapp", "action": "terminate", "call_id": "wacid.ANNOUNCED"}
    assert (await graph.post(f"{PNID}/calls", SEED.token, end))["success"] is True
    again = await error_of(graph.post(f"{PNID}/calls", SEED.token, end))
    assert again.code == 100 and "already ended" in str(again.details)
    placed = await graph.post(
        f"{PNID}/calls",
        SEED.token,
        {
            "messaging_product": "whatsapp",
            "to": "15551234567",
            "action": "connect",
            "session": {"sdp_type": "offer", "sdp": "v=0"},
        },
    )
    assert (await graph.post(f"{PNID}/calls", SEED.token, {**end, "call_id": placed["calls"][0]["id"]}))[
        "success"
    ] is True
