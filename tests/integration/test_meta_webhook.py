"""Meta's webhook end to end: real app, real storage (SQLite and PostgreSQL), signed deliveries.

Deliveries are built and signed by the Meta simulator's sender (thoth_pbx.sandbox.meta),
which computes the signature independently from the code under test.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.support.bitrix import wait_until
from thoth_pbx.clients.asterisk.ari import basic_auth_header
from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.clients.meta.payloads import CallEvent, fold_call
from thoth_pbx.clients.meta.tables import WebhookInbox
from thoth_pbx.sandbox import meta as sim

APP_SECRET = "app-secret-0123456789abcdef"
WABA_ID = "102290129340398"
PNID = "106540352242922"
DISPLAY = "+15550100001"


def auth(service) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": basic_auth_header(*service.admin_auth)}


@pytest.fixture
async def account(service) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return await add_account(service)


async def add_account(service) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = {"name": "Main", "waba_id": WABA_ID, "access_token": "EAAG" + "t" * 30, "app_secret": APP_SECRET}
    waba = await (await service.post("/api/admin/wabas", json=body, headers=auth(service))).json()
    phone = {"number": DISPLAY, "phone_number_id": PNID, "waba_account_id": waba["id"]}
    resp = await service.post("/api/admin/phones", json=phone, headers=auth(service))
    assert resp.status == 201, await resp.text()
    waba["phone"] = await resp.json()
    return waba


def url(account: dict[str, Any]) -> str:
    return f"/api/waba/?api-key={account['api_key']}"


async def post(service, account, body: bytes, *, secret: str = APP_SECRET, signature: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature or sim.sign(body, secret)}
    return await service.post(url(account), data=body, headers=headers)


async def inbox(service) -> list[WebhookInbox]:  # type: ignore[no-untyped-def]
    async with service.services.sessions() as session:
        return list((await session.scalars(select(WebhookInbox).order_by(WebhookInbox.id))).all())


def message_delivery(text_: str = "hi", wamid: str | None = None) -> bytes:
    return json.dumps(
        sim.delivery(WABA_ID, [sim.message_change(PNID, DISPLAY, "15551234567", text_, wamid=wamid)])
    ).encode()


async def test_waba_shows_callback_url_next_to_verify_token(service, account) -> None:  # type: ignore[no-untyped-def]
    assert account["callback_url"] == f"https://thoth.example.com/api/waba/?api-key={account['api_key']}"
    assert len(account["verify_token"]) >= 32
    listed = (await (await service.get("/api/admin/wabas", headers=auth(service))).json())["items"][0]
    assert account["api_key"] not in listed["callback_url"] and "…" in listed["callback_url"]
    full = await (await service.get(f"/api/admin/wabas/{account['id']}", headers=auth(service))).json()
    assert full["callback_url"] == account["callback_url"]


async def test_handshake_echoes_challenge_as_text(service, account) -> None:  # type: ignore[no-untyped-def]
    params = {"hub.mode": "subscribe", "hub.verify_token": account["verify_token"], "hub.challenge": "1158201444"}
    resp = await service.get("/api/waba/", params={"api-key": account["api_key"], **params})
    assert resp.status == 200
    assert resp.content_type == "text/plain" and await resp.text() == "1158201444"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hub.verify_token": "wrong-token"}, "hub.verify_token"),
        ({"hub.verify_token": None}, "hub.verify_token"),
        ({"hub.mode": "unsubscribe"}, "hub.mode"),
        ({"hub.challenge": None}, "hub.challenge"),
        ({"api-key": "not-a-key"}, "api-key"),
        ({"api-key": None}, "api-key"),
    ],
)
async def test_handshake_failures_are_403(service, account, change, field) -> None:  # type: ignore[no-untyped-def]
    params = {
        "api-key": account["api_key"],
        "hub.mode": "subscribe",
        "hub.verify_token": account["verify_token"],
        "hub.challenge": "42",
    }
    params.update(change)
    resp = await service.get("/api/waba/", params={k: v for k, v in params.items() if v is not None})
    assert resp.status == 403
    assert (await resp.json())["error"]["field"] == field


async def test_signed_message_is_stored_before_200_and_typed(service, account) -> None:  # type: ignore[no-untyped-def]
    resp = await post(service, account, message_delivery("hello", wamid="wamid.ABC"))
    assert resp.status == 200, await resp.text()
    rows = await inbox(service)  # already committed when the 200 came back
    assert [(r.kind, r.dedup_key, r.phone_number_id, r.waba_account_id) for r in rows] == [
        ("message", "m:wamid.ABC", PNID, account["id"])
    ]
    from thoth_pbx.clients.meta.payloads import Message, model_of

    message = model_of(rows[0].kind, rows[0].payload)
    assert isinstance(message, Message) and message.text == "hello" and message.from_ == "15551234567"


async def test_signature_is_checked_on_raw_bytes(service, account) -> None:  # type: ignore[no-untyped-def]
    raw = message_delivery("héllo")
    signature = sim.sign(raw, APP_SECRET)
    reserialised = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert reserialised != raw
    resp = await post(service, account, reserialised, signature=signature)
    assert resp.status == 401
    assert (await resp.json())["error"]["field"] == "X-Hub-Signature-256"
    for bad in (sim.sign(raw, "another-secret"), "sha1=" + signature[7:], "garbage"):
        assert (await post(service, account, raw, signature=bad)).status == 401
    resp = await service.post(url(account), data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 401
    assert await inbox(service) == []  # nothing stored from any of them
    assert (await post(service, account, raw, signature=signature)).status == 200


async def test_unknown_or_missing_api_key_is_403_and_rotation_is_immediate(service, account) -> None:  # type: ignore[no-untyped-def]
    body = message_delivery()
    resp = await service.post("/api/waba/", data=body, headers={"X-Hub-Signature-256": sim.sign(body, APP_SECRET)})
    assert resp.status == 403
    assert (await post(service, account, body)).status == 200  # the cache now holds the key
    rotated = await (
        await service.post(
            f"/api/admin/wabas/{account['id']}/rotate", json={"secret": "api_key"}, headers=auth(service)
        )
    ).json()
    assert (await post(service, account, message_delivery())).status == 403
    assert (await post(service, rotated, message_delivery())).status == 200


async def test_garbage_is_400_and_oversize_is_413(service, account) -> None:  # type: ignore[no-untyped-def]
    cases = {
        b"{not json": "body",
        b'["a"]': "body",
        b'{"object": "whatsapp_business_account"}': "entry",
        b'{"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": 3}]}]}': "entry[0].changes[0].value",
    }
    for body, field in cases.items():
        resp = await post(service, account, body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["field"] == field
    big = json.dumps(
        sim.delivery(WABA_ID, [sim.message_change(PNID, DISPLAY, "1555", "x" * (3 * 1024 * 1024))])
    ).encode()
    resp = await post(service, account, big)
    assert resp.status == 413
    assert await inbox(service) == []


async def test_duplicates_and_retries_are_stored_once(service, account) -> None:  # type: ignore[no-untyped-def]
    bodies = [message_delivery(f"m{i}", wamid=f"wamid.dup{i}") for i in range(3)]
    sender = sim.WebhookSender(str(service.make_url(url(account))), APP_SECRET)
    statuses = await sender.send(bodies, duplicate=True, reorder=True, seed=7)
    assert statuses == [200] * 6
    # the same message again inside a different delivery (Meta's retry after a timeout)
    assert (await post(service, account, message_delivery("m0", wamid="wamid.dup0"))).status == 200
    rows = await inbox(service)
    assert sorted(r.dedup_key for r in rows) == ["m:wamid.dup0", "m:wamid.dup1", "m:wamid.dup2"]


@pytest.mark.parametrize("field", ["account_settings_update", "account_update"])
async def test_the_same_setting_at_two_times_is_stored_twice_with_its_time(service, account, field: str) -> None:  # type: ignore[no-untyped-def]
    """Off at t1, on at t2, off at t3: the third carries the first's value. Each is kept, with
    the entry's time; Meta's retry of the first (same time) is not."""
    off = {"field": field, "value": {"phone_number_id": PNID, "calling": {"status": "DISABLED"}}}
    on = {"field": field, "value": {"phone_number_id": PNID, "calling": {"status": "ENABLED"}}}
    for change, at in ((off, 1739321024), (on, 1739321060), (off, 1739321090), (off, 1739321024)):
        assert (
            await post(service, account, json.dumps(sim.delivery(WABA_ID, [change], time=at)).encode())
        ).status == 200
    rows = await inbox(service)
    assert [(r.payload["value"]["calling"]["status"], int(r.entry_time.timestamp())) for r in rows] == [
        ("DISABLED", 1739321024),
        ("ENABLED", 1739321060),
        ("DISABLED", 1739321090),
    ]
    assert rows[0].entry_time.tzinfo is not None


async def test_concurrent_duplicate_deliveries_store_one_row(service, account) -> None:  # type: ignore[no-untyped-def]
    body = message_delivery("same", wamid="wamid.race")
    statuses = [r.status for r in await asyncio.gather(*(post(service, account, body) for _ in range(20)))]
    assert statuses == [200] * 20
    assert [r.dedup_key for r in await inbox(service)] == ["m:wamid.race"]


async def test_batch_of_1000_updates_in_one_delivery(service, account) -> None:  # type: ignore[no-untyped-def]
    doc = sim.delivery(WABA_ID, [sim.messages_change(PNID, DISPLAY, "15551234567", 1000)])
    writer = service.services.meta.writer
    commits_before = writer.commits
    resp = await post(service, account, json.dumps(doc).encode())
    assert resp.status == 200 and (await resp.json())["received"] == 1000
    assert writer.commits == commits_before + 1  # one transaction
    async with service.services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookInbox)) == 1000


async def test_terminate_before_connect(service, account) -> None:  # type: ignore[no-untyped-def]
    call_id = "wacid.HBgLMTU1NTEyMzQ1NjcVAgARGBI"
    connect = sim.delivery(WABA_ID, [sim.call_connect_change(PNID, DISPLAY, call_id, "15551234567")])
    terminate = sim.delivery(
        WABA_ID, [sim.call_terminate_change(PNID, DISPLAY, call_id, "15551234567", status="Completed")]
    )
    assert (await post(service, account, json.dumps(terminate).encode())).status == 200
    assert (await post(service, account, json.dumps(connect).encode())).status == 200
    rows = await inbox(service)
    assert [(r.kind, r.dedup_key) for r in rows] == [
        ("call.terminate", f"c:{call_id}:terminate"),
        ("call.connect", f"c:{call_id}:connect"),
    ]
    outcome = None
    for row in rows:  # arrival order
        event = CallEvent.from_dict(row.payload["item"])
        outcome = fold_call(outcome, event)
    assert outcome is not None and outcome.terminated and not outcome.active
    assert outcome.late_connect and outcome.status == "COMPLETED" and outcome.duration == 42


async def test_unknown_field_and_event_kept_and_logged_once(service, account, json_logs) -> None:  # type: ignore[no-untyped-def]
    weird = {
        "field": "calls",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100001", "phone_number_id": PNID},
            "calls": [{"id": "wacid.X", "event": "call_created", "from": "1", "to": "2"}],
        },
    }
    new_field = {"field": "business_capability_update", "value": {"max_daily_conversation_per_phone": 1}}
    for i in range(2):
        doc = sim.delivery(WABA_ID, [weird, new_field])
        doc["entry"][0]["changes"][0]["value"]["calls"][0]["id"] = f"wacid.X{i}"
        doc["entry"][0]["changes"][1]["value"]["max_daily_conversation_per_phone"] = 1000 + i
        assert (await post(service, account, json.dumps(doc).encode())).status == 200
    kinds = [r.kind for r in await inbox(service)]
    assert kinds == ["call.call_created", "unknown.business_capability_update"] * 2
    notices = [line for line in json_logs.lines if "unknown field, event or key" in line]
    assert len(notices) == 2  # one per unknown kind, not one per delivery


async def test_dispatcher_routes_by_phone_number_id(service, account) -> None:  # type: ignore[no-untyped-def]
    seen: list[InboxItem] = []
    done = asyncio.Event()

    async def handler(item: InboxItem) -> None:
        seen.append(item)
        if len(seen) == 2:
            done.set()

    service.services.meta.dispatcher.subscribe("message", handler)
    other = json.dumps(
        sim.delivery(WABA_ID, [sim.message_change("999000111", "+15550199999", "1555", "to nobody")])
    ).encode()
    assert (await post(service, account, message_delivery("routed"))).status == 200
    assert (await post(service, account, other)).status == 200
    await asyncio.wait_for(done.wait(), 10)
    assert seen[0].phone is not None and seen[0].phone.id == account["phone"]["id"]
    assert seen[0].model.text == "routed"  # type: ignore[union-attr]
    assert seen[1].phone is None  # not configured: still stored and delivered, unrouted
    await asyncio.wait_for(service.services.meta.dispatcher.wait_idle(), 10)
    async with service.services.sessions() as session:
        query = select(func.count()).select_from(WebhookInbox).where(WebhookInbox.processed_at.is_(None))
        assert await session.scalar(query) == 0


async def test_inbox_payload_is_plain_json_in_the_database(service, account) -> None:  # type: ignore[no-untyped-def]
    assert (await post(service, account, message_delivery("stored", wamid="wamid.raw"))).status == 200
    async with service.services.engine.connect() as conn:
        raw = (await conn.execute(text("SELECT payload FROM webhook_inbox"))).scalar_one()
    payload = raw if isinstance(raw, dict) else json.loads(raw)
    assert payload["item"]["text"]["body"] == "stored" and payload["metadata"]["phone_number_id"] == PNID


async def test_failing_handler_is_recorded_and_does_not_stop_others(service, account) -> None:  # type: ignore[no-untyped-def]
    handled: list[str] = []

    async def broken(item: InboxItem) -> None:
        raise RuntimeError("bitrix is down")

    async def fine(item: InboxItem) -> None:
        handled.append(item.kind)

    dispatcher = service.services.meta.dispatcher
    dispatcher.subscribe("call.", broken)
    dispatcher.subscribe("", fine)
    call = sim.delivery(WABA_ID, [sim.call_connect_change(PNID, DISPLAY, "wacid.F", "1555")])
    assert (await post(service, account, json.dumps(call).encode())).status == 200
    assert (await post(service, account, message_delivery("after"))).status == 200
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    rows = await inbox(service)
    assert handled == ["call.connect", "message"]
    assert "bitrix is down" in (rows[0].error or "") and rows[0].processed_at is not None
    assert rows[1].error is None and rows[1].processed_at is not None


async def test_deeply_nested_signed_body_is_a_400_not_a_500(service, account) -> None:  # type: ignore[no-untyped-def]
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on this
    resp = await post(service, account, deep)
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "body"
    assert await inbox(service) == []
    admin = await service.post(
        "/api/admin/wabas", data=deep, headers={**auth(service), "Content-Type": "application/json"}
    )
    assert admin.status == 400 and (await admin.json())["error"]["field"] == "body"


async def test_the_dispatcher_lets_other_work_run_between_deliveries(service, account) -> None:  # type: ignore[no-untyped-def]
    """A batch of inbox rows is not one long turn of the event loop: work that became ready
    meanwhile (an operator's message, a call) runs between two deliveries, not after all of them."""
    loop = asyncio.get_running_loop()
    turns: list[int] = []
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(item: InboxItem) -> None:
        seen.append(len(turns))  # how many of the callbacks scheduled so far have had their turn
        loop.call_soon(turns.append, 1)
        if len(seen) == 5:
            done.set()

    service.services.meta.dispatcher.subscribe("message", handler)
    doc = sim.delivery(WABA_ID, [sim.messages_change(PNID, DISPLAY, "15551234567", 5)])
    assert (await post(service, account, json.dumps(doc).encode())).status == 200
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_delivery_a_killed_instance_stored_is_dispatched_by_a_live_one(  # type: ignore[no-untyped-def]
    tmp_path, database_url, aiohttp_client
) -> None:
    """Several instances share the inbox: one killed after storing a delivery and before
    dispatching it leaves the rows pending, and nothing notifies the others; their sweep finds them."""
    from tests.conftest import make_settings
    from thoth_pbx.app import build_app, open_services
    from thoth_pbx.clients.meta.inbox import InboxWriter
    from thoth_pbx.clients.meta.webhook import WebhookReceiver

    services = await open_services(make_settings(tmp_path, database_url, THOTH_INBOX_SWEEP_SECONDS="0.2"))
    live = await aiohttp_client(build_app(services))
    live.services, live.admin_auth = services, ("admin", "correct-horse-battery")
    waba = await add_account(live)
    seen: list[InboxItem] = []
    got = asyncio.Event()

    async def handler(item: InboxItem) -> None:
        seen.append(item)
        got.set()

    services.meta.dispatcher.subscribe("message", handler)
    await asyncio.wait_for(services.meta.dispatcher.wait_idle(), 10)
    # the killed instance: the same account, its own writer, and no dispatcher to tell
    writer = InboxWriter(services.engine)
    killed = WebhookReceiver(services.meta.accounts, writer)
    body = message_delivery("stored, never dispatched", wamid="wamid.orphan")
    try:
        keys = await killed.account(waba["api_key"])
        await killed.receive(keys, body, sim.sign(body, APP_SECRET))
    finally:
        await writer.stop()
    await asyncio.wait_for(got.wait(), 10)
    assert [item.model.text for item in seen] == ["stored, never dispatched"]  # type: ignore[union-attr]
    await asyncio.wait_for(services.meta.dispatcher.wait_idle(), 10)
    assert all(row.processed_at is not None for row in await inbox(live))


async def test_a_batch_subscriber_gets_a_moments_statuses_together_after_the_other_events(service, account) -> None:  # type: ignore[no-untyped-def]
    """Meta posts each status on its own; a batch subscriber (the statuses of messaging) gets
    those that arrived together in one call, in arrival order, and after the other events of
    the pass: a message that came later is not held behind them."""
    order: list[str] = []
    batches: list[list[str]] = []
    done = asyncio.Event()

    async def statuses(items: list[InboxItem]) -> None:
        batches.append([item.model.id for item in items])  # type: ignore[union-attr]
        order.append("statuses")
        done.set()

    async def message(item: InboxItem) -> None:
        order.append("message")

    dispatcher = service.services.meta.dispatcher
    dispatcher.subscribe_batch("status", statuses)
    dispatcher.subscribe("message", message)
    changes = [sim.status_change(PNID, DISPLAY, f"wamid.S{i}", "delivered", "15551234567") for i in range(3)]
    changes.append(sim.message_change(PNID, DISPLAY, "15551234567", "after the statuses"))
    assert (await post(service, account, json.dumps(sim.delivery(WABA_ID, changes)).encode())).status == 200
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert batches == [["wamid.S0", "wamid.S1", "wamid.S2"]]
    assert order == ["message", "statuses"]
    assert all(row.processed_at is not None and row.error is None for row in await inbox(service))


async def test_a_failing_batch_subscriber_is_recorded_on_each_of_its_events(service, account) -> None:  # type: ignore[no-untyped-def]
    async def broken(items: list[InboxItem]) -> None:
        raise RuntimeError("bitrix is down")

    dispatcher = service.services.meta.dispatcher
    dispatcher.subscribe_batch("status", broken)
    changes = [sim.status_change(PNID, DISPLAY, f"wamid.F{i}", "read", "15551234567") for i in range(2)]
    assert (await post(service, account, json.dumps(sim.delivery(WABA_ID, changes)).encode())).status == 200

    async def handled() -> bool:
        return all(row.processed_at is not None for row in await inbox(service))

    await wait_until(handled, what="the statuses handled")
    rows = await inbox(service)
    assert len(rows) == 2 and all("bitrix is down" in (row.error or "") for row in rows)
