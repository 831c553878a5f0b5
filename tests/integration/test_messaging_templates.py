"""Templates and the 24-hour window in an Open Lines chat, against the Meta and Bitrix24
simulators: each command form sends the right Graph request and shows the operator what the
customer got; each wrong command is explained and sends nothing; free text outside the window
is held back; the window's notices come once each at the right time (the clock is an argument).

Meta: developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates,
developers.facebook.com/docs/graph-api/reference/whats-app-business-account/message_templates,
error 131047 (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes);
Bitrix24: im.message.add (apidocs.bitrix24.com/api-reference/chats/messages/index.html)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support.bitrix import wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.features.messaging.models import MessagingMessage, MessagingWindow
from thoth_pbx.features.messaging.window import CLOSED_TEXT


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        await b.customer_writes("hello", wamid="wamid.opens-the-window")
        await b.quiet()
        await wait_until(lambda: _synced(b), what="the templates listed from Meta")
        yield b


async def _synced(wa: Bridge) -> bool:
    listing = await wa.admin_get(f"/api/admin/wabas/{await _account(wa)}/templates")
    return listing["synced_at"] is not None and len(listing["templates"]) == 9


async def _account(wa: Bridge) -> int:
    return int((await wa.admin_get("/api/admin/wabas"))["items"][0]["id"])


def _notices(wa: Bridge) -> list[str]:
    return [str(c.params["MESSAGE"]) for c in wa.env.sim.recorder.calls("im.message.add", ok=True)]


def _templates(wa: Bridge) -> list[dict[str, Any]]:
    return [m for m in wa.phone.sent if m.get("type") == "template"]


async def _operator(wa: Bridge, text: str) -> None:
    sent = await wa.env.sim.operator_writes(wa.env.portal, wa.line_id, CUSTOMER, text, signature=False)
    assert sent["status"] == 200, sent


async def test_each_command_form_sends_the_right_template_and_shows_what_the_customer_got(wa: Bridge) -> None:
    commands = [
        "template-hello_world+en_US",
        "template+order_update+en_US+Anna|#77",
        "template-order_update+ru+Анна|A-1",
        "template-invoice+en_US+INV-9|header=https://files.example.com/inv-9.pdf",
        "template-track_parcel+en_US+button0=AB123",
    ]
    for n, command in enumerate(commands, start=1):
        await _operator(wa, command)
        await wait_until(lambda n=n: len(_templates(wa)) == n, what=f"template {n} at Meta")  # type: ignore[misc]
    await wa.quiet()
    sent = [m["template"] for m in _templates(wa)]
    assert sent[0] == {"name": "hello_world", "language": {"code": "en_US"}}
    assert sent[1]["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "#77"}]}
    ]
    assert sent[2]["language"] == {"code": "ru"}
    assert sent[3]["components"][0] == {
        "type": "header",
        "parameters": [{"type": "document", "document": {"link": "https://files.example.com/inv-9.pdf"}}],
    }
    assert sent[4]["components"] == [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "AB123"}]}
    ]
    # what Meta says the customer reads is what the operator is shown in the chat
    shown = [n for n in _notices(wa) if n.startswith("Sent to WhatsApp as a template:")]
    assert len(shown) == 5
    assert "Hi Anna, your order #77 has shipped." in shown[1]
    assert wa.phone.sent[-4]["rendered"]["body"] in shown[1]
    assert "Здравствуйте, Анна! Ваш заказ A-1 отправлен." in shown[2]
    assert "https://track.example.com/p/AB123" in shown[4]


async def test_each_wrong_command_is_explained_to_the_operator_and_nothing_is_sent(wa: Bridge) -> None:
    wrong = {
        "template-no_such+en_US": "there is no template named no_such",
        "template-order_update+de+Anna|1": "has no language de (it has: en_US, ru)",
        "template-promo+en_US+x": "is PAUSED, not APPROVED",
        "template-old_offer+en_US": "is REJECTED, not APPROVED",
        "template-order_update+en_US+Anna": "it needs 2 values, the command gives 1",
        "template-order_update+en_US+Anna||x": "value 2 is empty",
    }
    for command in wrong:
        await _operator(wa, command)
    await wa.quiet()
    assert _templates(wa) == [] and [m for m in wa.phone.sent if m.get("type") == "text"] == []
    told = [n for n in _notices(wa) if n.startswith("Template not sent:")]
    assert len(told) == len(wrong)
    for notice, reason in zip(told, wrong.values(), strict=True):
        assert reason in notice
    assert "Templates that fit: " in told[0] and "order_update (en_US, 2 values)" in told[0]
    async with wa.env.sessions() as session:
        rows = (await session.scalars(select(MessagingMessage).where(MessagingMessage.direction == "out"))).all()
    assert [r.status for r in rows] == ["failed"] * len(wrong) and all(r.error for r in rows)


async def _age_window(wa: Bridge, hours: float) -> None:
    """Our view of the window: the customer's last message `hours` ago."""
    async with wa.env.sessions() as session, session.begin():
        await session.execute(
            update(MessagingWindow).values(last_inbound_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours))
        )


async def test_free_text_outside_the_window_is_held_back_inside_it_goes(wa: Bridge) -> None:
    await _operator(wa, "inside the window")
    await wait_until(lambda: any(m.get("type") == "text" for m in wa.phone.sent), what="the text at Meta")
    await _age_window(wa, 25)
    wa.meta.customer_wrote(SEED.phone_number_id, CUSTOMER, at=time.time() - 25 * 3600)
    await _operator(wa, "outside the window")
    await wa.quiet()
    texts = [m["text"]["body"] for m in wa.phone.sent if m.get("type") == "text"]
    assert texts == ["inside the window"]
    assert _notices(wa).count(CLOSED_TEXT) == 1
    # a template still goes, and the customer's answer opens the window again
    await _operator(wa, "template-hello_world+en_US")
    await wait_until(lambda: len(_templates(wa)) == 1, what="the template outside the window")
    await wa.customer_writes("hi again", wamid="wamid.reopens")
    await wa.quiet()
    await _operator(wa, "welcome back")
    await wait_until(lambda: any(m.get("text", {}).get("body") == "welcome back" for m in wa.phone.sent), what="text")


async def test_meta_refusing_outside_its_window_gives_the_same_notice(wa: Bridge) -> None:
    """Our view said open (a customer message we never saw, a clock apart): Meta's 131047,
    as the failed status webhook it usually is, tells the operator the same thing."""
    wa.meta.customer_wrote(SEED.phone_number_id, CUSTOMER, at=time.time() - 25 * 3600)
    await _operator(wa, "we think the window is open")
    await wait_until(
        lambda: any("WhatsApp error 131047" in n for n in _notices(wa)), what="the operator told about 131047"
    )
    notice = next(n for n in _notices(wa) if "131047" in n)
    assert "only an approved template can be sent now" in notice and "template-NAME+LANG" in notice


async def test_the_window_notices_come_once_each_at_the_right_time(wa: Bridge) -> None:
    messaging = wa.env.services.messaging_parts
    async with wa.env.sessions() as session:
        opened = await session.scalar(select(MessagingWindow.last_inbound_at))
    assert opened is not None
    assert await messaging.scan_windows(opened + dt.timedelta(hours=22, minutes=59)) == 0
    assert await messaging.scan_windows(opened + dt.timedelta(hours=23)) == 1
    assert await messaging.scan_windows(opened + dt.timedelta(hours=23, minutes=30)) == 0
    assert await messaging.scan_windows(opened + dt.timedelta(hours=24)) == 1
    assert await messaging.scan_windows(opened + dt.timedelta(hours=30)) == 0
    await wa.quiet()
    window_notices = [n for n in _notices(wa) if "24-hour window of this chat" in n]
    assert len(window_notices) == 2
    assert "closes in 60 min" in window_notices[0] and "closed at" in window_notices[1]
    chats = await wa.admin_get(f"/api/admin/phones/{wa.phone_id}/chats")
    assert chats["chats"][0]["window"]["open"] is True  # by the real clock the customer wrote just now
    assert chats["chats"][0]["window"]["closes_at"] == (opened + dt.timedelta(hours=24)).isoformat()


async def test_a_template_paused_at_meta_is_refused_at_once(wa: Bridge) -> None:
    template = wa.meta.template(SEED.waba_id, "order_update", "en_US")
    wa.meta.set_template_status(template.id, "PAUSED")
    await wa.meta.drain_webhooks()

    async def paused() -> bool:
        listing = await wa.admin_get(f"/api/admin/wabas/{await _account(wa)}/templates")
        return any(t["name"] == "order_update" and t["status"] == "PAUSED" for t in listing["templates"])

    await wait_until(paused, what="the template paused in our copy")
    await _operator(wa, "template-order_update+en_US+Anna|#1")
    await wa.quiet()
    assert _templates(wa) == []
    assert any("is PAUSED, not APPROVED" in n for n in _notices(wa))
