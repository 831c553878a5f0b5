"""The simulated portal as an SMS provider's host: messageservice.* over plain HTTP, and a CRM "send
SMS" that posts the handler request to a tiny aiohttp server, as a portal does.

Pages (b24restdocs, api-reference/messageservice/; published under apidocs.bitrix24.com/api-reference/
messageservice/...html): messageservice-sender-add.md (parameters, errors, "What comes to the
handler"), -sender-list.md, -sender-delete.md, -message-status-update.md; and
tutorials/messageservice/index.md (the handler request of a CRM card)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web

from tests.support.bitrix import USERS
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal

HANDLER_PATH = "/sms-handler"


@dataclass
class Receiver:
    """Our handler stand-in: every form it got; answers `answer`."""

    url: str = ""
    forms: list[dict[str, str]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=lambda: {"ok": True})

    async def handle(self, request: web.Request) -> web.Response:
        self.content_types.append(request.content_type)
        self.forms.append(dict(parse_qsl((await request.read()).decode())))
        return web.json_response(self.answer)


@dataclass
class Env:
    sim: BitrixSimulator
    portal: Portal
    token: str
    http: httpx.AsyncClient
    receiver: Receiver

    async def rest(self, method: str, **params: Any) -> tuple[int, Any]:
        resp = await self.http.post(method, json={**params, "auth": self.token})
        return resp.status_code, resp.json()

    async def add_sender(self, code: str = "THOTH_15550100001_1") -> None:
        status, body = await self.rest(
            "messageservice.sender.add", CODE=code, TYPE="SMS", HANDLER=self.receiver.url, NAME="WhatsApp +15550100001"
        )
        assert (status, body["result"]) == (200, True), body


@pytest.fixture
async def env(aiohttp_server) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    receiver = Receiver()
    app = web.Application()
    app.router.add_post(HANDLER_PATH, receiver.handle)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url(HANDLER_PATH))
    sim = BitrixSimulator()
    await sim.start()
    portal = sim.add_portal(users=USERS)
    portal.installed = True
    portal.application_token = "app-token-sms"
    token = sim.issue_tokens(portal)["access_token"]
    async with httpx.AsyncClient(base_url=portal.client_endpoint) as http:
        yield Env(sim, portal, token, http, receiver)
    await sim.stop()


def err(code: str, description: str) -> tuple[int, dict[str, str]]:
    return 400, {"error": code, "error_description": description}


async def test_senders_are_validated_and_kept_per_portal_and_app(env: Env) -> None:
    """sender.add checks CODE, NAME, TYPE (only SMS) and HANDLER with the documented errors and
    refuses a second sender with the same CODE for the app; sender.list answers the calling app's
    codes on this portal only; sender.delete names the sender (messageservice-sender-add.md,
    -sender-list.md, -sender-delete.md)."""
    valid = {"CODE": "wa_1", "TYPE": "SMS", "HANDLER": env.receiver.url, "NAME": {"en": "WhatsApp", "de": "WhatsApp"}}
    bad_cases = [
        ({}, "Empty data!"),
        ({**valid, "CODE": ""}, "Empty sender code!"),
        ({**valid, "CODE": "wa 1!"}, "Wrong sender code!"),
        ({**valid, "NAME": ""}, "Empty sender NAME!"),
        ({**valid, "TYPE": ""}, "Empty sender message TYPE!"),
        ({**valid, "TYPE": "VOICE"}, "Unknown sender message TYPE!"),
    ]
    for params, description in bad_cases:
        resp = await env.http.post("messageservice.sender.add", json={**params, "auth": env.token})
        assert (resp.status_code, resp.json()) == err("ERROR_SENDER_VALIDATION_FAILURE", description), params
    assert (await env.rest("messageservice.sender.add", **valid))[1]["result"] is True
    assert await env.rest("messageservice.sender.add", **valid) == err(
        "ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!"
    )
    await env.add_sender("wa-2.b")
    assert (await env.rest("messageservice.sender.list"))[1]["result"] == ["wa_1", "wa-2.b"]
    assert env.portal.senders["wa_1"]["NAME"] == {"en": "WhatsApp", "de": "WhatsApp"}

    other = env.sim.add_portal(users=USERS)
    other.installed = True
    async with httpx.AsyncClient(base_url=other.client_endpoint) as http:
        resp = await http.post("messageservice.sender.list", json={"auth": env.sim.issue_tokens(other)["access_token"]})
        assert resp.json()["result"] == []  # senders belong to their portal
    env.portal.senders["foreign"] = {"CODE": "foreign", "TYPE": "SMS", "HANDLER": "https://x", "APP_ID": "app.other"}
    assert (await env.rest("messageservice.sender.list"))[1]["result"] == ["wa_1", "wa-2.b"]  # and to their app
    assert await env.rest("messageservice.sender.delete", CODE="foreign") == err(
        "ERROR_SENDER_NOT_FOUND", "Sender not found!"
    )
    assert await env.rest("messageservice.sender.delete", CODE="") == err(
        "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"
    )
    assert (await env.rest("messageservice.sender.delete", CODE="wa_1"))[1]["result"] is True
    assert await env.rest("messageservice.sender.delete", CODE="wa_1") == err(
        "ERROR_SENDER_NOT_FOUND", "Sender not found!"
    )
    assert (await env.rest("messageservice.sender.list"))[1]["result"] == ["wa-2.b"]
    hook = env.sim.add_webhook(env.portal, scope="messageservice")
    async with httpx.AsyncClient(base_url=env.sim.webhook_url(env.portal, hook)) as http:
        resp = await http.post("messageservice.sender.add", json=valid)
        assert (resp.status_code, resp.json()) == err("ACCESS_DENIED", "Application context required")


async def test_a_crm_sms_posts_the_handler_request_as_a_portal_does(env: Env) -> None:
    """Sending an SMS from a CRM card POSTs to the sender's HANDLER, form-encoded: module_id crm,
    bindings, properties, type, code, a 32-hex message_id, message_to, message_body, ts and auth
    with the app's application_token and a working access token; a robot sends module_id bizproc
    with the workflow's ids instead of bindings (-sender-add.md#handler; the tutorial's example)."""
    await env.add_sender()
    env.sim.clock = lambda: 1_780_000_000.0
    sent = await env.sim.send_sms(env.portal, "THOTH_15550100001_1", "+15550002222", "template-hello_world+en_US")
    assert (sent["status"], sent["answer"]) == (200, {"ok": True})
    (form,) = env.receiver.forms
    assert env.receiver.content_types == ["application/x-www-form-urlencoded"]
    assert re.fullmatch(r"[0-9a-f]{32}", form["message_id"]) and form["message_id"] == sent["message_id"]
    assert {k: v for k, v in form.items() if not k.startswith("auth[")} == {
        "module_id": "crm",
        "bindings[0][OWNER_TYPE_ID]": "3",
        "bindings[0][OWNER_ID]": "1",
        "properties[phone_number]": "+15550002222",
        "properties[message_text]": "template-hello_world+en_US",
        "type": "SMS",
        "code": "THOTH_15550100001_1",
        "message_id": sent["message_id"],
        "message_to": "+15550002222",
        "message_body": "template-hello_world+en_US",
        "ts": "1780000000",
    }
    assert form["auth[application_token]"] == "app-token-sms"
    assert (form["auth[member_id]"], form["auth[domain]"]) == (env.portal.member_id, env.portal.domain.split(":")[0])
    assert form["auth[client_endpoint]"] == env.portal.client_endpoint and form["auth[user_id]"] == "1"
    resp = await env.http.post("messageservice.sender.list", json={"auth": form["auth[access_token]"]})
    assert resp.json()["result"] == ["THOTH_15550100001_1"]  # the handler may answer with it

    robot = await env.sim.send_sms(
        env.portal, "THOTH_15550100001_1", "+15550002222", "hi", module_id="bizproc", application_token="forged"
    )
    form = env.receiver.forms[-1]
    assert form["module_id"] == "bizproc" and not any(k.startswith("bindings") for k in form)
    assert (form["document_id[0]"], form["document_id[2]"], form["document_type[2]"]) == ("crm", "DEAL_1", "DEAL")
    assert form["workflow_id"] and form["auth[application_token]"] == "forged"
    assert env.portal.sms_messages[robot["message_id"]]["to"] == "+15550002222"
    with pytest.raises(ValueError, match="no sender"):
        await env.sim.send_sms(env.portal, "nope", "+1555", "x")

    async with httpx.AsyncClient(base_url=env.sim.base_url) as control:
        resp = await control.post("/_sandbox/sms", json={"code": "THOTH_15550100001_1", "to": "+1555", "text": "t"})
        assert resp.status_code == 200 and resp.json()["status"] == 200
        assert env.receiver.forms[-1]["message_body"] == "t"
        assert (await control.post("/_sandbox/sms", json={"code": "THOTH_15550100001_1"})).status_code == 400


async def test_status_updates_are_validated_and_recorded(env: Env) -> None:
    """message.status.update takes the sender's CODE, the handler's message_id and a documented
    STATUS; each accepted one is recorded in order (sms_statuses); an unknown message or another
    sender's is ERROR_MESSAGE_NOT_FOUND, an unknown status ERROR_MESSAGE_STATUS_INCORRECT
    (messageservice-message-status-update.md)."""
    await env.add_sender("sms_a")
    await env.add_sender("sms_b")
    env.sim.clock = lambda: 1_780_000_100.0
    message_id = (await env.sim.send_sms(env.portal, "sms_a", "+15550002222", "x"))["message_id"]
    for status in ("sent", "delivered"):
        ok = await env.rest("messageservice.message.status.update", CODE="sms_a", MESSAGE_ID=message_id, STATUS=status)
        assert ok[1]["result"] is True
    not_found = err("ERROR_MESSAGE_NOT_FOUND", "Message not found!")
    assert (
        await env.rest("messageservice.message.status.update", CODE="sms_a", MESSAGE_ID="f" * 32, STATUS="failed")
        == not_found
    )
    assert (
        await env.rest("messageservice.message.status.update", CODE="sms_b", MESSAGE_ID=message_id, STATUS="failed")
        == not_found
    )
    assert await env.rest(
        "messageservice.message.status.update", CODE="sms_a", MESSAGE_ID=message_id, STATUS="read"
    ) == err("ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!")
    assert await env.rest("messageservice.message.status.update", MESSAGE_ID=message_id, STATUS="failed") == err(
        "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"
    )
    assert await env.rest(
        "messageservice.message.status.update", CODE="sms a", MESSAGE_ID=message_id, STATUS="failed"
    ) == err("ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!")
    assert env.sim.sms_statuses(env.portal) == [
        {"code": "sms_a", "message_id": message_id, "status": "sent", "at": 1_780_000_100.0},
        {"code": "sms_a", "message_id": message_id, "status": "delivered", "at": 1_780_000_100.0},
    ]
    assert env.portal.sms_messages[message_id]["status"] == "delivered"
