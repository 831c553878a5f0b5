"""A WhatsApp number as a Bitrix24 SMS provider, against both simulators: flagging the number
registers its sender and clearing the flag (or unlinking) removes it; an SMS from the CRM
becomes a template on WhatsApp and its statuses reach the portal; free text goes only inside
the 24-hour window; a forged handler request is refused and sends nothing; a repeat is sent once.

Bitrix24: bitrix24-rest.md §3 (messageservice.sender.add / .delete / .list, the HANDLER request,
messageservice.message.status.update; apidocs.bitrix24.com/api-reference/messageservice/);
Meta: developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import all_done, wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.features.messaging.sms import HANDLER_PATH
from thoth_pbx.sandbox.bitrix import messageservice

CODE = "thoth_" + SEED.display_phone_number.lstrip("+")


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        yield b


async def _flag(wa: Bridge, value: bool) -> None:
    resp = await wa.env.http.patch(
        f"/api/admin/phones/{wa.phone_id}", json={"sms_service": value}, headers=wa.env.admin
    )
    assert resp.status == 200, await resp.text()


async def _registered(wa: Bridge) -> Any:
    await wait_until(lambda: all_done(wa.env.sessions), what="the senders reconciled")
    return wa.env.portal.senders


async def _sender_ready(wa: Bridge) -> None:
    await _flag(wa, True)
    await wait_until(lambda: CODE in wa.env.portal.senders, what="our sender on the portal")
    await wait_until(lambda: all_done(wa.env.sessions), what="a quiet outbox")


def _statuses(wa: Bridge, message_id: str) -> list[str]:
    return [s["status"] for s in wa.env.sim.sms_statuses(wa.env.portal) if s["message_id"] == message_id]


async def test_flagging_the_number_registers_its_sender_and_clearing_or_unlinking_removes_it(wa: Bridge) -> None:
    assert CODE not in await _registered(wa)
    await _flag(wa, True)
    await wait_until(lambda: CODE in wa.env.portal.senders, what="the sender added")
    sender = wa.env.portal.senders[CODE]
    assert sender["TYPE"] == "SMS" and sender["HANDLER"] == wa.env.public_url + HANDLER_PATH
    assert SEED.display_phone_number.lstrip("+") in str(sender["NAME"])
    await _flag(wa, False)
    await wait_until(lambda: CODE not in wa.env.portal.senders, what="the sender removed")
    await _flag(wa, True)
    await wait_until(lambda: CODE in wa.env.portal.senders, what="the sender added again")
    resp = await wa.env.http.patch(
        f"/api/admin/phones/{wa.phone_id}", json={"app_instance_id": None}, headers=wa.env.admin
    )
    assert resp.status == 200, await resp.text()
    await wait_until(lambda: CODE not in wa.env.portal.senders, what="the sender removed with the link")


async def test_an_sms_from_the_crm_becomes_a_template_and_its_statuses_reach_the_portal(wa: Bridge) -> None:
    await _sender_ready(wa)
    answer = await wa.env.sim.send_sms(wa.env.portal, CODE, "+" + CUSTOMER, "order_update+en_US+Anna|#77")
    assert answer["status"] == 200, answer
    message_id = answer["message_id"]
    await wait_until(lambda: any(m.get("type") == "template" for m in wa.phone.sent), what="the template at Meta")
    (sent,) = [m for m in wa.phone.sent if m.get("type") == "template"]
    assert sent["to"] == CUSTOMER and sent["template"]["name"] == "order_update"
    assert sent["rendered"]["body"] == "Hi Anna, your order #77 has shipped."
    await wa.quiet()
    await wait_until(lambda: "delivered" in _statuses(wa, message_id), what="delivered reported to the portal")
    assert _statuses(wa, message_id) == ["sent", "delivered"]
    # the prefixed command works the same; a repeat of the same message is not sent twice
    again = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "template-hello_world+en_US")
    assert again["status"] == 200
    await wait_until(lambda: len([m for m in wa.phone.sent if m.get("type") == "template"]) == 2, what="second")


async def test_free_text_sms_goes_only_inside_the_window_and_a_refusal_is_reported(wa: Bridge) -> None:
    await _sender_ready(wa)
    outside = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "Your order is ready")
    assert outside["status"] == 200 and outside["answer"]["status"] == "failed"
    assert "24-hour window" in outside["answer"]["error"]
    await wait_until(lambda: _statuses(wa, outside["message_id"]) == ["failed"], what="failed reported")
    assert [m for m in wa.phone.sent if m.get("type") == "text"] == []
    await wa.customer_writes("hello", wamid="wamid.opens")
    await wa.quiet()
    inside = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "Your order is ready")
    assert inside["answer"]["status"] == "queued"
    await wait_until(
        lambda: any(m.get("text", {}).get("body") == "Your order is ready" for m in wa.phone.sent), what="the text"
    )
    await wa.quiet()
    await wait_until(lambda: "delivered" in _statuses(wa, inside["message_id"]), what="delivered reported")
    # a wrong template command is a failed SMS with the reason, nothing sent
    wrong = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "template-order_update+en_US+Anna")
    assert wrong["answer"]["status"] == "failed" and "needs 2 values" in wrong["answer"]["error"]


async def test_a_forged_or_foreign_handler_request_is_refused_and_sends_nothing(wa: Bridge) -> None:
    await _sender_ready(wa)
    forged = await wa.env.sim.send_sms(
        wa.env.portal, CODE, CUSTOMER, "template-hello_world+en_US", application_token="forged"
    )
    assert forged["status"] == 401
    assert forged["answer"]["error"]["field"] == "auth[application_token]"
    # a sender of this portal that is none of our numbers' (pointed at our handler by someone else)
    wa.env.portal.senders["thoth_999"] = dict(wa.env.portal.senders[CODE], CODE="thoth_999")
    other = await wa.env.sim.send_sms(wa.env.portal, "thoth_999", CUSTOMER, "template-hello_world+en_US")
    assert other["status"] == 404 and other["answer"]["error"]["field"] == "code"
    resp = await wa.env.http.post(HANDLER_PATH, data={"code": CODE, "message_body": "x"})
    assert resp.status == 401
    await wa.quiet()
    assert wa.phone.sent == [] and wa.env.sim.sms_statuses(wa.env.portal) == []


async def test_the_same_sms_posted_twice_is_sent_once(wa: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """A portal that posts the handler request again (its own retry) reuses the message_id."""
    await _sender_ready(wa)
    monkeypatch.setattr(messageservice.secrets, "token_hex", lambda _n: "ab" * 16)
    first = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "template-hello_world+en_US")
    second = await wa.env.sim.send_sms(wa.env.portal, CODE, CUSTOMER, "template-hello_world+en_US")
    assert first["answer"]["status"] == "queued"
    assert second["answer"]["duplicate"] is True and second["answer"]["message_id"] == "ab" * 16
    await wa.quiet()
    assert len([m for m in wa.phone.sent if m.get("type") == "template"]) == 1
