"""Customers known by a business-scoped user id (BSUID): a username-only customer gets an Open
Lines chat like anyone else and the operator's reply goes to the BSUID; a customer who changes
their number keeps one chat and one history; the admin API shows who is who.

Meta: meta-whatsapp-cloud-api.md §4 "Customer identity" (developers.facebook.com/documentation/
business-messaging/whatsapp/business-scoped-user-ids/), system messages (developers.facebook.com/
documentation/business-messaging/whatsapp/webhooks/reference/messages/system/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.sandbox import meta as meta_sim

BSUID = "US.13491208655302741918"
NEW_NUMBER = "15557654321"
NEW_BSUID = "US.88888888888888888888"


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


def _from(text: str, wamid: str, *, phone: str | None, bsuid: str, username: str | None = None) -> dict[str, Any]:
    """A customer's message as Meta sends it in 2026: the BSUID in contacts[].user_id, the phone
    (wa_id, from) only when Meta shares it, the username in the profile when set."""
    change = meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, phone or "0", text, wamid=wamid)
    value = change["value"]
    contact = value["contacts"][0]
    contact["user_id"] = bsuid
    value["messages"][0]["from_user_id"] = bsuid
    if username:
        contact["profile"]["username"] = username
    if phone is None:
        del contact["wa_id"], value["messages"][0]["from"]
    return meta_sim.delivery(SEED.waba_id, [change])


async def _operator(wa: Bridge, chat: str, text: str) -> None:
    sent = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, chat, text, signature=False)
    assert sent["status"] == 200, sent


def _texts_to(wa: Bridge, text: str) -> list[dict[str, Any]]:
    return [m for m in wa.phone.sent if (m.get("text") or {}).get("body") == text]


async def test_a_username_only_customer_gets_a_chat_and_the_reply_goes_to_the_bsuid(wa: Bridge) -> None:
    await wa.post(_from("hi, I have no number to show", "wamid.u1", phone=None, bsuid=BSUID, username="anna_k"))
    await wa.quiet()
    (entry,) = wa.in_bitrix()
    assert entry["chat"]["id"] == BSUID and entry["user"]["id"] == BSUID
    assert "phone" not in entry["user"] and entry["user"]["name"] == "Sandbox User"
    await _operator(wa, BSUID, "Hello Anna")
    await wait_until(lambda: _texts_to(wa, "Hello Anna"), what="the reply at Meta")
    (reply,) = _texts_to(wa, "Hello Anna")
    assert reply.get("recipient") == BSUID and "to" not in reply
    found = await wa.admin_get("/api/admin/customers?q=anna")
    (customer,) = found["items"]
    assert customer["bsuid"] == BSUID and customer["phone"] is None and customer["username"] == "anna_k"
    assert customer["chat_key"] == BSUID


async def test_a_customer_who_changes_their_number_keeps_one_chat(wa: Bridge) -> None:
    await wa.post(_from("order 77?", "wamid.n1", phone=CUSTOMER, bsuid=BSUID))
    await wa.quiet()
    await _operator(wa, CUSTOMER, "Looking")  # the chat's recipient is now known (and kept) ...
    await wait_until(lambda: _texts_to(wa, "Looking"), what="the first reply at Meta")
    assert _texts_to(wa, "Looking")[0]["to"] == CUSTOMER
    await wa.quiet()
    changed = meta_sim.message_change(SEED.phone_number_id, SEED.display_phone_number, CUSTOMER, "", wamid="wamid.sys")
    message = changed["value"]["messages"][0]
    del changed["value"]["contacts"], message["text"]  # system messages carry no contacts array
    message["type"] = "system"
    message["from_user_id"] = BSUID
    message["system"] = {
        "body": f"User Sandbox User changed from {CUSTOMER} to {NEW_NUMBER}",
        "wa_id": NEW_NUMBER,
        "user_id": NEW_BSUID,
        "type": "user_changed_number",
    }
    await wa.post(meta_sim.delivery(SEED.waba_id, [changed]))
    await wa.post(_from("it's me, new number", "wamid.n2", phone=NEW_NUMBER, bsuid=NEW_BSUID))
    await wa.quiet()
    chats = {e["chat"]["id"] for e in wa.in_bitrix()}
    assert chats == {CUSTOMER}  # one Open Lines chat for the whole history
    assert any("changed from" in e["message"]["text"] for e in wa.in_bitrix())
    await _operator(wa, CUSTOMER, "Noted, thanks")
    await wait_until(lambda: _texts_to(wa, "Noted, thanks"), what="the reply at Meta")
    assert _texts_to(wa, "Noted, thanks")[0]["to"] == NEW_NUMBER  # ... until the number changes
    history = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}")
    assert [m["direction"] for m in history["messages"]] == ["in", "out", "in", "in", "out"]
    (current,) = (await wa.admin_get(f"/api/admin/customers?q={NEW_NUMBER}"))["items"]
    assert current["bsuid"] == NEW_BSUID and current["chat_key"] == CUSTOMER
    detail = await wa.admin_get(f"/api/admin/customers/{current['id']}")
    assert [p["bsuid"] for p in detail["previous"]] == [BSUID]
    assert detail["previous"][0]["replaced_by_id"] == current["id"]


async def test_the_customers_api_checks_what_it_is_given(wa: Bridge) -> None:
    for query, field in (("limit=0", "limit"), ("account_id=x", "account_id"), ("q=" + "x" * 201, "q")):
        resp = await wa.env.http.get(f"/api/admin/customers?{query}", headers=wa.env.admin)
        assert resp.status == 400 and (await resp.json())["error"]["field"] == field
    resp = await wa.env.http.get("/api/admin/customers/999", headers=wa.env.admin)
    assert resp.status == 404 and (await resp.json())["error"]["field"] == "id"
