"""WhatsApp -> Bitrix24 Open Lines: each inbound message, signed by Meta and stored by our
webhook, reaches the number's line as one imconnector.send.messages entry, once and in order
(issue 12 item 2, first slice: every type as text; media files come next).

Bitrix24: apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-messages.html;
Meta: developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bitrix import ServiceEnv, all_done, jobs, service_env, wait_until
from thoth_pbx.features.messaging.inbound import KIND_INBOUND
from thoth_pbx.sandbox import meta as meta_sim

NUMBER, PNID, WABA_ID, SECRET = "+14155550123", "106540352242922", "102290129340398", "0123456789abcdef"
CUSTOMER = "15551234567"


@pytest.fixture
async def env(tmp_path, database_url, aiohttp_server, aiohttp_client) -> AsyncIterator[ServiceEnv]:  # type: ignore[no-untyped-def]
    async with service_env(tmp_path, database_url, aiohttp_server, aiohttp_client) as environment:
        yield environment


async def _linked_number(env: ServiceEnv) -> str:
    """Install, an account with its app secret, a linked number with a green line; the webhook URL."""
    instance_id = await env.install()
    waba = await (
        await env.http.post(
            "/api/admin/wabas",
            json={"name": "Main", "waba_id": WABA_ID, "access_token": "EAAG" + "x" * 30, "app_secret": SECRET},
            headers=env.admin,
        )
    ).json()
    phone = {"number": NUMBER, "phone_number_id": PNID, "waba_account_id": waba["id"], "app_instance_id": instance_id}
    created = await (await env.http.post("/api/admin/phones", json=phone, headers=env.admin)).json()

    async def green() -> bool:
        view = await (await env.http.get(f"/api/admin/phones/{created['id']}/connector", headers=env.admin)).json()
        return bool(view["connector"] == "green" and await all_done(env.sessions))

    await wait_until(green, what="the green line")
    return f"/api/waba/?api-key={waba['api_key']}"


async def _post(env: ServiceEnv, url: str, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    resp = await env.http.post(
        url, data=body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": meta_sim.sign(body, SECRET)}
    )
    assert resp.status == 200, await resp.text()


def _message(wamid: str, text: str, *, name: str = "Anna-Maria O'Neil 2024 🎉") -> dict[str, Any]:
    change = meta_sim.message_change(PNID, NUMBER, CUSTOMER, text, wamid=wamid, name=name, timestamp=1749416383)
    return meta_sim.delivery(WABA_ID, [change])


def _sent(env: ServiceEnv) -> list[dict[str, Any]]:
    return [m for call in env.sim.recorder.calls("imconnector.send.messages", ok=True) for m in call.params["MESSAGES"]]


async def test_a_text_message_reaches_the_open_line_once(env: ServiceEnv) -> None:
    url = await _linked_number(env)
    await _post(env, url, _message("wamid.ONE", "Does it come in another color?"))
    await wait_until(lambda: len(_sent(env)) == 1, what="the message in Open Lines")
    (entry,) = _sent(env)
    assert entry["user"] == {
        "id": CUSTOMER,
        "name": "Anna-Maria O'Neil",
        "phone": "+" + CUSTOMER,
        "skip_phone_validate": "Y",
    }
    assert entry["message"] == {"id": "wamid.ONE", "text": "Does it come in another color?", "date": 1749416383}
    assert entry["chat"] == {"id": CUSTOMER}
    (call,) = env.sim.recorder.calls("imconnector.send.messages", ok=True)
    line_ids = [i for i, line in env.portal.open_lines.items() if line["LINE_NAME"] == "THOTH_14155550123"]
    assert call.params["CONNECTOR"] == "thoth_whatsapp" and int(call.params["LINE"]) == line_ids[0]


async def test_retries_and_reordering_give_one_entry_per_message_in_order(env: ServiceEnv) -> None:
    url = await _linked_number(env)
    first, second = _message("wamid.A", "first"), _message("wamid.B", "second")
    await _post(env, url, first)
    await asyncio.gather(*(_post(env, url, doc) for doc in (first, first, second, second)))  # Meta retries
    await _post(env, url, first)
    await wait_until(lambda: len(_sent(env)) >= 2, what="both messages")
    await wait_until(lambda: all_done(env.sessions), what="a quiet outbox")
    assert [m["message"]["id"] for m in _sent(env)] == ["wamid.A", "wamid.B"]


async def test_every_type_is_visible_never_dropped(env: ServiceEnv) -> None:
    url = await _linked_number(env)
    base = meta_sim.message_change(PNID, NUMBER, CUSTOMER, "x", wamid="wamid.T0")
    kinds = {
        "wamid.LOC": {"type": "location", "location": {"latitude": 37.48, "longitude": -122.14, "name": "Meta HQ"}},
        "wamid.NEW": {"type": "payment_request", "payment_request": {"amount": 1}},
    }
    for wamid, content in kinds.items():
        change = json.loads(json.dumps(base))
        message = change["value"]["messages"][0]
        message.pop("text")
        message.update({"id": wamid, **content})
        await _post(env, url, meta_sim.delivery(WABA_ID, [change]))
    await wait_until(lambda: len(_sent(env)) == 2, what="two entries")
    texts = {m["message"]["id"]: m["message"]["text"] for m in _sent(env)}
    assert texts["wamid.LOC"].startswith("[Location] Meta HQ https://maps.google.com/?q=37.48,-122.14")
    assert "payment_request" in texts["wamid.NEW"] and "cannot show yet" in texts["wamid.NEW"]


async def test_a_message_waits_for_its_line(env: ServiceEnv) -> None:
    """Bitrix24 down while the line is set up: the message is delivered once the line is green."""
    url = await _linked_number(env)
    env.sim.outage = True
    await _post(env, url, _message("wamid.LATE", "hello?"))

    async def retrying() -> bool:
        rows = await jobs(env.sessions)
        return any(r.kind == KIND_INBOUND and r.attempts >= 1 and r.status == "pending" for r in rows)

    await wait_until(retrying, what="the message's job retrying through the outage")
    env.sim.outage = False
    await wait_until(
        lambda: [m["message"]["id"] for m in _sent(env)] == ["wamid.LATE"],
        timeout=30,
        what="the message after the outage",
    )
