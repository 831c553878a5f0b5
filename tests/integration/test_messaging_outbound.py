"""Bitrix24 -> WhatsApp, first slice: an operator's message in the number's Open Lines chat
(ONIMCONNECTORMESSAGEADD, as a portal posts it) reaches the customer through the Graph API with
its BB-code turned into WhatsApp formatting; events for other connectors or lines are refused.

Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/events/on-im-connector-message-add.html;
Meta: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages (text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from tests.support.bitrix import all_done, wait_until
from tests.support.messaging import CUSTOMER, SEED, Bridge, bridge
from thoth_pbx.features.messaging.models import MessagingLine


@pytest.fixture
async def wa(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[Bridge]:  # type: ignore[no-untyped-def]
    async with bridge(tmp_path, database_url, aiohttp_server, aiohttp_client) as b:
        await b.customer_writes("hello", wamid="wamid.opens-the-window")  # WhatsApp's 24-hour window
        await b.quiet()
        yield b


def _operator_event(line: int, text: str, *, connector: str = "thoth_whatsapp", n: int = 1) -> dict[str, Any]:
    return {
        "CONNECTOR": connector,
        "LINE": line,
        "MESSAGES": [
            {
                "im": {"chat_id": 2000 + n, "message_id": 3000 + n},
                "message": {"user_id": 1, "text": text},
                "chat": {"id": CUSTOMER},
            }
        ],
    }


async def test_an_operator_message_reaches_the_customer_formatted(wa: Bridge) -> None:
    env, line = wa.env, wa.line_id
    sent = await env.sim.send_event(
        env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, "[b]Anna:[/b] [br]Your order is [i]ready[/i]")
    )
    assert [status for _, status in sent] == [200]
    phone = wa.phone
    await wait_until(lambda: len(phone.sent) == 1, what="the message at Meta")
    (message,) = phone.sent
    assert message["to"] == CUSTOMER and message["type"] == "text"
    assert message["text"]["body"] == "*Anna:*\nYour order is _ready_"


async def test_in_order_per_chat_and_foreign_events_refused(wa: Bridge) -> None:
    env, line = wa.env, wa.line_id
    for n in range(1, 4):
        await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, f"m{n}", n=n))
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, "x", connector="other"))
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line + 99, "y"))
    phone = wa.phone
    await wait_until(lambda: len(phone.sent) >= 3, what="three messages at Meta")
    await wait_until(lambda: all_done(env.sessions), what="a quiet outbox")
    assert [m["text"]["body"] for m in phone.sent] == ["m1", "m2", "m3"]


async def test_an_operator_message_from_the_simulators_control_endpoint(wa: Bridge) -> None:
    """`POST /_sandbox/operator-message` (what docs/messaging.md's try-it uses) writes as an
    operator does; a bad body is a 400 naming the problem."""
    await wa.customer_writes("Hello?", wamid="wamid.CTRL")
    await wait_until(lambda: wa.in_bitrix(), what="the customer's message")
    async with aiohttp.ClientSession() as http:
        body = {"line": wa.line_id, "chat": CUSTOMER, "text": "Hi [i]there[/i]"}
        async with http.post(wa.env.sim.base_url + "/_sandbox/operator-message", json=body) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == 200
        async with http.post(wa.env.sim.base_url + "/_sandbox/operator-message", json={"line": 1}) as resp:
            assert resp.status == 400 and "chat" in (await resp.json())["error"]
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the message at Meta")
    assert wa.phone.sent[0]["text"]["body"] == "*Anna Admin:*\nHi _there_"


async def test_a_replaced_access_token_and_a_moved_line_hold_from_the_next_message(wa: Bridge) -> None:
    """The number, its token and its line are kept in memory between operator messages
    (store/snapshots.py): the admin typing a new token, or the line being recreated under a
    new id, holds from the very next message."""
    env = wa.env
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(wa.line_id, "before", n=1))
    await wait_until(lambda: len(wa.phone.sent) == 1, what="the first message at Meta (the number kept)")
    # Meta: the old token revoked, a new one issued; the admin types it in
    old = wa.meta.tokens.pop(SEED.token)
    wa.meta.tokens["EAAG-replaced-token-0001"] = replace(old, token="EAAG-replaced-token-0001")
    (account,) = (await wa.admin_get("/api/admin/wabas"))["items"]
    resp = await env.http.patch(
        f"/api/admin/wabas/{account['id']}", json={"access_token": "EAAG-replaced-token-0001"}, headers=env.admin
    )
    assert resp.status == 200, await resp.text()
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(wa.line_id, "after", n=2))
    await wait_until(lambda: len(wa.phone.sent) == 2, what="the second message at Meta, with the new token")
    # the line recreated in Bitrix24 under another id: the old id is no longer ours
    async with env.sessions() as session, session.begin():
        await session.execute(update(MessagingLine).values(line_id=wa.line_id + 500))
    stale = await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(wa.line_id, "x", n=3))
    assert [status for _, status in stale] == [200]
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(wa.line_id + 500, "moved", n=4))
    await wait_until(lambda: len(wa.phone.sent) == 3, what="the message on the moved line")
    await wa.quiet()
    assert [m["text"]["body"] for m in wa.phone.sent] == ["before", "after", "moved"]
