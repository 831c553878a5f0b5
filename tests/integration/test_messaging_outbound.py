"""Bitrix24 -> WhatsApp, first slice: an operator's message in the number's Open Lines chat
(ONIMCONNECTORMESSAGEADD, as a portal posts it) reaches the customer through the Graph API with
its BB-code turned into WhatsApp formatting; events for other connectors or lines are refused.

Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/events/on-im-connector-message-add.html;
Meta: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages (text)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import ServiceEnv, all_done, service_env, wait_until
from thoth_pbx.sandbox import meta as meta_sim

SEED = meta_sim.Seed()
CUSTOMER = "15551234567"


@pytest.fixture
async def both(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[tuple[ServiceEnv, Any]]:  # type: ignore[no-untyped-def]
    graph = meta_sim.seeded(SEED)
    graph_server = await aiohttp_server(graph.app())
    async with service_env(
        tmp_path,
        database_url,
        aiohttp_server,
        aiohttp_client,
        THOTH_META_GRAPH_URL=str(graph_server.make_url("")).rstrip("/"),
    ) as env:
        yield env, graph


async def _green_line(env: ServiceEnv) -> int:
    instance_id = await env.install()
    waba = await (
        await env.http.post(
            "/api/admin/wabas",
            json={"name": "Main", "waba_id": SEED.waba_id, "access_token": SEED.token},
            headers=env.admin,
        )
    ).json()
    phone = {
        "number": SEED.display_phone_number,
        "phone_number_id": SEED.phone_number_id,
        "waba_account_id": waba["id"],
        "app_instance_id": instance_id,
    }
    created = await (await env.http.post("/api/admin/phones", json=phone, headers=env.admin)).json()

    async def green() -> bool:
        view = await (await env.http.get(f"/api/admin/phones/{created['id']}/connector", headers=env.admin)).json()
        return bool(view["connector"] == "green" and await all_done(env.sessions))

    await wait_until(green, what="the green line")
    view = await (await env.http.get(f"/api/admin/phones/{created['id']}/connector", headers=env.admin)).json()
    return int(view["line_id"])


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


async def test_an_operator_message_reaches_the_customer_formatted(both) -> None:  # type: ignore[no-untyped-def]
    env, graph = both
    line = await _green_line(env)
    sent = await env.sim.send_event(
        env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, "[b]Anna:[/b] [br]Your order is [i]ready[/i]")
    )
    assert [status for _, status in sent] == [200]
    phone = graph.phones[SEED.phone_number_id]
    await wait_until(lambda: len(phone.sent) == 1, what="the message at Meta")
    (message,) = phone.sent
    assert message["to"] == CUSTOMER and message["type"] == "text"
    assert message["text"]["body"] == "*Anna:*\nYour order is _ready_"


async def test_in_order_per_chat_and_foreign_events_refused(both) -> None:  # type: ignore[no-untyped-def]
    env, graph = both
    line = await _green_line(env)
    for n in range(1, 4):
        await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, f"m{n}", n=n))
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line, "x", connector="other"))
    await env.sim.send_event(env.portal, "ONIMCONNECTORMESSAGEADD", _operator_event(line + 99, "y"))
    phone = graph.phones[SEED.phone_number_id]
    await wait_until(lambda: len(phone.sent) >= 3, what="three messages at Meta")
    await wait_until(lambda: all_done(env.sessions), what="a quiet outbox")
    assert [m["text"]["body"] for m in phone.sent] == ["m1", "m2", "m3"]
