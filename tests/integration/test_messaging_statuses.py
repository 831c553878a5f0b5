"""Bitrix24 <-> WhatsApp with both simulators: an operator's answer reaches the customer,
Meta's statuses come back to Bitrix24 with the right ids, failures and edits show in the
operator's chat, quotes become WhatsApp replies, and the admin sees each chat's history.

Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-status-delivery.html
(and -reading), .../chats/messages/index.html (im.message.add); Meta:
developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/messages/status,
.../guides/mark-message-as-read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.sandbox import meta as meta_sim
from thoth_pbx.sandbox.bitrix.state import SYSTEM, OpenLinesChat


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


async def _chat(wa: Bridge, wamid: str = "wamid.HI", text: str = "Is the red one in stock?") -> OpenLinesChat:
    await wa.customer_writes(text, wamid=wamid)
    await wait_until(lambda: any(m["message"]["id"] == wamid for m in wa.in_bitrix()), what="the customer's message")
    chat = wa.env.portal.chat("thoth_whatsapp", wa.line_id, CUSTOMER)
    assert chat is not None
    return chat


def _system_lines(chat: OpenLinesChat) -> list[str]:
    return [m.text for m in chat.of_kind(SYSTEM)]


async def test_statuses_come_back_with_the_right_ids_and_the_customer_message_is_read(wa: Bridge) -> None:
    chat = await _chat(wa)
    written = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "Yes, [b]two[/b] left")
    assert written["status"] == 200
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the answer at Meta")
    (sent,) = wa.phone.sent
    assert sent["text"]["body"] == "*Anna Admin:*\nYes, *two* left"
    await wa.meta.drain_webhooks()
    await wa.quiet()
    delivery = wa.env.sim.recorder.calls("imconnector.send.status.delivery", ok=True)
    reading = wa.env.sim.recorder.calls("imconnector.send.status.reading", ok=True)
    expected = {
        "im": {"chat_id": str(chat.chat_id), "message_id": str(written["message_id"])},
        "message": {"id": [sent["id"]]},
        "chat": {"id": CUSTOMER},
    }
    for calls in (delivery, reading):
        assert len(calls) == 1
        (entry,) = calls[0].params["MESSAGES"]
        entry["message"].pop("date", None)
        assert entry == expected
    message = chat.message(int(written["message_id"]))
    assert message is not None and message.delivered and message.read
    # the operator answered: the customer's message is marked read on WhatsApp
    assert [r["message_id"] for r in wa.phone.read] == ["wamid.HI"]
    history = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}")
    assert [(m["direction"], m["status"]) for m in history["messages"]] == [("in", "read"), ("out", "read")]
    assert history["messages"][1]["wamid"] == sent["id"]
    chats = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats")
    assert [(c["customer"], c["messages"], c["failed"]) for c in chats["chats"]] == [(CUSTOMER, 2, 0)]


async def test_sent_alone_is_not_delivered(wa: Bridge) -> None:
    """Meta accepting a send (and even `sent`) is not delivery: Bitrix24 hears nothing yet."""
    await _chat(wa)
    wa.phone.auto_statuses = ["sent"]
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "On its way")
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the answer at Meta")
    await wa.meta.drain_webhooks()
    await wa.quiet()
    assert wa.env.sim.recorder.count("imconnector.send.status.delivery") == 0
    history = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}")
    assert history["messages"][-1]["status"] == "sent"


async def test_a_failed_status_shows_code_and_hint_in_the_chat(wa: Bridge) -> None:
    chat = await _chat(wa)
    wa.phone.undeliverable = {CUSTOMER: 131026}
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "Hello?")
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the send")
    await wa.meta.drain_webhooks()
    await wait_until(lambda: _system_lines(chat), what="the notice in the chat")
    (notice,) = _system_lines(chat)
    assert "131026" in notice and "could not be delivered" in notice
    history = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}")
    assert history["messages"][-1]["status"] == "failed" and history["messages"][-1]["error_code"] == 131026
    assert wa.env.sim.recorder.count("imconnector.send.status.delivery") == 0


async def test_a_graph_refusal_is_told_and_the_chat_goes_on(wa: Bridge) -> None:
    chat = await _chat(wa)
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "hello")  # marks the customer's read
    # the read mark goes out beside the send: wait for both, or the refusal below hits the mark
    await wait_until(lambda: len(wa.phone.sent) == 1 and len(wa.phone.read) == 1, what="the first answer and read mark")
    wa.meta.fail_next(_rule(131047, "Re-engagement message"))
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "first")
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "second")
    await wait_until(lambda: len(wa.phone.sent) == 2, what="the third message at Meta")
    await wait_until(lambda: _system_lines(chat), what="the notice")
    assert [m["text"]["body"] for m in wa.phone.sent] == ["*Anna Admin:*\nhello", "*Anna Admin:*\nsecond"]
    (notice,) = _system_lines(chat)
    assert "131047" in notice and "only an approved template" in notice


def _rule(code: int, message: str) -> Any:
    from thoth_pbx.sandbox.meta.state import FailRule

    return FailRule(code=code, message=message, path="/messages", method="POST")


async def test_edits_and_deletes_get_a_notice(wa: Bridge) -> None:
    chat = await _chat(wa)
    written = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, "Price is 10")
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the send")
    await wa.env.sim.operator_edits(wa.env.portal, wa.line_id, CUSTOMER, int(written["message_id"]), "Price is 12")
    await wa.env.sim.operator_deletes(wa.env.portal, wa.line_id, CUSTOMER, int(written["message_id"]))
    await wait_until(lambda: len(_system_lines(chat)) == 2, what="two notices")
    edit, delete = _system_lines(chat)
    assert "cannot change a message already sent" in edit and "cannot take back" in delete
    assert len(wa.phone.sent) == 1  # nothing else went to the customer


async def test_an_operator_quote_becomes_a_whatsapp_reply(wa: Bridge) -> None:
    await _chat(wa, "wamid.Q1", "Do you deliver to Lyon?")
    await _chat(wa, "wamid.Q2", "And to Paris?")
    dashes = "-" * 54
    quote = f"{dashes}[br]Sandbox User [04.12.2026 10:15][br]Do you deliver to Lyon?[br]{dashes}[br]Yes, in 2 days"
    await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, quote)
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the reply at Meta")
    (sent,) = wa.phone.sent
    assert sent["context"] == {"message_id": "wamid.Q1"}
    assert sent["text"]["body"] == "*Anna Admin:*\nYes, in 2 days"


async def test_a_customer_reply_shows_the_quoted_message(wa: Bridge) -> None:
    await _chat(wa, "wamid.R1", "Which size?")
    await wa.customer_writes("M please", wamid="wamid.R2", context="wamid.R1")
    await wait_until(lambda: len(wa.in_bitrix()) == 2, what="the reply in Bitrix24")
    assert wa.in_bitrix()[1]["message"]["text"] == "[Reply to «Which size?»] M please"


async def test_unknown_chats_and_phones_are_404_naming_the_field(wa: Bridge) -> None:
    for path, status, field in (
        (f"/api/admin/phones/{wa.phone_id}/chats/nobody", 404, "customer"),
        ("/api/admin/phones/999/chats", 404, "id"),
        (f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}?limit=x", 400, "limit"),
        (f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}?limit=501", 400, "limit"),
    ):
        resp = await wa.env.http.get(path, headers=wa.env.admin)
        assert resp.status == status, path
        assert (await resp.json())["error"]["field"] == field


async def test_statuses_that_arrive_together_reach_bitrix_in_one_call_per_step(wa: Bridge) -> None:
    """Meta's statuses of several operator messages, arriving together, are one job and one
    Bitrix24 call per step (MESSAGES is an array), delivery before reading."""
    await _chat(wa)
    wa.phone.auto_statuses = []  # this test posts Meta's statuses itself
    for n in range(3):
        written = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, f"answer {n}")
        assert written["status"] == 200
    await wait_until(lambda: len(wa.phone.sent) == 3, what="the answers at Meta")
    await wa.quiet()  # each answer's wamid stored
    wamids = [m["id"] for m in wa.phone.sent]
    changes = [
        meta_sim.status_change(SEED.phone_number_id, SEED.display_phone_number, wamid, status, CUSTOMER)
        for status in ("delivered", "read")
        for wamid in wamids
    ]
    await wa.post(meta_sim.delivery(SEED.waba_id, changes))
    await wa.quiet()
    recorder = wa.env.sim.recorder
    delivery = recorder.calls("imconnector.send.status.delivery", ok=True)
    reading = recorder.calls("imconnector.send.status.reading", ok=True)
    assert len(delivery) == 1 and len(reading) == 1
    for calls in (delivery, reading):
        assert [m["message"]["id"] for m in calls[0].params["MESSAGES"]] == [[w] for w in wamids]
    assert delivery[0].at <= reading[0].at
    history = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats/{CUSTOMER}")
    outgoing = [m for m in history["messages"] if m["direction"] == "out"]
    assert [m["status"] for m in outgoing] == ["read"] * 3
