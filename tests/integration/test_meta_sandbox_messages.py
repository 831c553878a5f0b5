"""The Meta simulator's messaging side over loopback HTTP: media upload/URL/download, every message
type's validation, and the signed status webhooks that follow a send.

Docs (each test names the page it follows):
- MEDIA: developers.facebook.com/documentation/business-messaging/whatsapp/business-phone-numbers/media
- MESSAGES: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages
- STATUS: developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/messages/status
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from thoth_pbx.sandbox import meta as sim

SEED = sim.Seed()
PNID = SEED.phone_number_id
AUTH = {"Authorization": f"Bearer {SEED.token}"}
CUSTOMER = "15550001111"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
PDF = b"%PDF-1.4\n" + b"x" * 64


@dataclass
class Env:
    sim: sim.MetaSimulator
    client: TestClient  # type: ignore[type-arg]


@dataclass
class Receiver:
    """A tiny webhook endpoint: records each delivery, answers `answers` in turn (then 200)."""

    url: str = ""
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    def statuses(self) -> list[dict[str, Any]]:
        return [json.loads(body)["entry"][0]["changes"][0]["value"]["statuses"][0] for _, body in self.got]


@pytest.fixture
async def env(aiohttp_server, aiohttp_client) -> Env:  # type: ignore[no-untyped-def]
    simulator = sim.seeded(SEED)
    simulator.status_poster.backoff = 0.001
    # the customer wrote first: free-form sends are inside the 24-hour window here (the window
    # closed is test_meta_sandbox_templates.py's subject)
    simulator.customer_wrote(PNID, CUSTOMER)
    server = await aiohttp_server(simulator.app())
    return Env(simulator, await aiohttp_client(server))


@pytest.fixture
async def receiver(aiohttp_server) -> Receiver:  # type: ignore[no-untyped-def]
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await aiohttp_server(app)
    hook.url = str(server.make_url("/hook"))
    return hook


async def upload(env: Env, data: bytes, mime: str, *, type_: str | None = None, product: str | None = "whatsapp"):  # type: ignore[no-untyped-def]
    form = aiohttp.FormData()
    if product is not None:
        form.add_field("messaging_product", product)
    form.add_field("type", type_ or mime)
    form.add_field("file", data, filename="upload.bin", content_type=mime)
    return await env.client.post(f"/v25.0/{PNID}/media", data=form, headers=AUTH)


async def upload_id(env: Env, data: bytes, mime: str) -> str:
    resp = await upload(env, data, mime)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["id"])


async def send(env: Env, message: dict[str, Any], to: str = CUSTOMER):  # type: ignore[no-untyped-def]
    body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **message}
    return await env.client.post(f"/v25.0/{PNID}/messages", json=body, headers=AUTH)


async def hook_up(env: Env, receiver: Receiver, **app: Any) -> None:
    resp = await env.client.patch(f"/_sandbox/apps/{SEED.app_id}", json={"callback_url": receiver.url, **app})
    assert resp.status == 200, await resp.text()


def announce(env: Env, wamid: str) -> None:
    change = sim.message_change(PNID, SEED.display_phone_number, CUSTOMER, "hi", wamid=wamid)
    env.sim.announce(sim.delivery(SEED.waba_id, [change]))


# ---- media


async def test_upload_then_url_then_download_needs_the_bearer_token(env: Env) -> None:
    """Upload -> GET /{media_id} -> download; the URL needs `Authorization: Bearer` (MEDIA:
    "If you omit your token, the request will fail"; Get media URL response fields)."""
    media_id = await upload_id(env, PNG, "image/png")
    node = await (await env.client.get(f"/v25.0/{media_id}", headers=AUTH)).json()
    assert node == {
        "messaging_product": "whatsapp",
        "url": node["url"],
        "mime_type": "image/png",
        "sha256": hashlib.sha256(PNG).hexdigest(),
        "file_size": len(PNG),
        "id": media_id,
    }
    assert node["url"].startswith(str(env.client.make_url("/_media/")))
    session = env.client.session
    async with session.get(node["url"]) as none:
        assert none.status == 401
    async with session.get(node["url"], headers={"Authorization": "Bearer EAAnot-a-token"}) as bad:
        assert bad.status == 401
    async with session.get(node["url"], headers=AUTH) as ok:
        assert ok.status == 200 and ok.content_type == "image/png" and await ok.read() == PNG
    assert env.sim.media_downloads == [
        {"media_id": media_id, "ok": False, "status": 401},
        {"media_id": media_id, "ok": False, "status": 401},
        {"media_id": media_id, "ok": True, "status": 200},
    ]


async def test_media_url_expires_five_minutes_after_the_get(env: Env) -> None:
    """A media URL is valid for 5 minutes, then the download is a 404 and a new GET gives a new
    URL (MEDIA: "Media URLs expire after 5 minutes"; "you will receive a 404 Not Found")."""
    now = [1_000_000.0]
    env.sim.clock = lambda: now[0]
    media_id = await upload_id(env, PNG, "image/png")
    url = (await (await env.client.get(f"/v25.0/{media_id}", headers=AUTH)).json())["url"]
    now[0] += 299
    async with env.client.session.get(url, headers=AUTH) as still:
        assert still.status == 200
    now[0] += 1
    async with env.client.session.get(url, headers=AUTH) as expired:
        assert expired.status == 404
    fresh = (await (await env.client.get(f"/v25.0/{media_id}", headers=AUTH)).json())["url"]
    assert fresh != url
    async with env.client.session.get(fresh, headers=AUTH) as again:
        assert again.status == 200
    assert [d["status"] for d in env.sim.media_downloads] == [200, 404, 200]


async def test_delete_media_and_phone_number_id_checks(env: Env) -> None:
    """`phone_number_id` must be the number the media was uploaded on; media a user sent was
    uploaded on none; DELETE -> success and the media is gone (MEDIA: Get media URL, Delete media)."""
    media_id = await upload_id(env, PNG, "image/png")
    assert (await env.client.get(f"/v25.0/{media_id}?phone_number_id={PNID}", headers=AUTH)).status == 200
    other = await env.client.get(f"/v25.0/{media_id}?phone_number_id=999", headers=AUTH)
    assert other.status == 400 and "phone_number_id" in (await other.json())["error"]["message"]
    inbound = env.sim.add_media(PNID, b"voice", "audio/ogg; codecs=opus")
    assert (await env.client.get(f"/v25.0/{inbound}?phone_number_id={PNID}", headers=AUTH)).status == 400
    assert (await (await env.client.get(f"/v25.0/{inbound}", headers=AUTH)).json())["mime_type"] == (
        "audio/ogg; codecs=opus"
    )
    url = (await (await env.client.get(f"/v25.0/{media_id}", headers=AUTH)).json())["url"]
    deleted = await env.client.delete(f"/v25.0/{media_id}", headers=AUTH)
    assert await deleted.json() == {"success": True}
    gone = await env.client.get(f"/v25.0/{media_id}", headers=AUTH)
    assert gone.status == 400 and (await gone.json())["error"]["error_subcode"] == 33
    async with env.client.session.get(url, headers=AUTH) as old:
        assert old.status == 404


def _webp(size: int, *, animated: bool) -> bytes:
    head = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0" + (b"\x02" if animated else b"\x00")
    return head + b"\0" * (size - len(head))


@pytest.mark.parametrize(
    ("data", "mime", "type_", "words"),
    [
        (b"GIF89a", "image/gif", None, "unsupported MIME type 'image/gif'"),
        (b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024 - 2), "image/jpeg", None, "image/jpeg allows at most 5 MB"),
        (_webp(100 * 1024 + 1, animated=False), "image/webp", None, "at most 100 KB"),
        (_webp(500 * 1024 + 1, animated=True), "image/webp", None, "at most 500 KB"),
        (b"a" * (16 * 1024 * 1024 + 1), "audio/mpeg", None, "at most 16 MB"),
        (PNG, "image/png", "image/jpeg", "does not match"),
        (b"", "application/pdf", None, "empty"),
    ],
)
async def test_upload_refuses_what_the_supported_media_table_refuses(
    env: Env, data: bytes, mime: str, type_: str | None, words: str
) -> None:
    """Unsupported MIME types, files over the type's size and a mismatched MIME type are refused
    with 131053 in Graph's error shape (MEDIA: Supported media types; "mismatched MIME type (131053)")."""
    resp = await upload(env, data, mime, type_=type_)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == 131053 and error["type"] == "OAuthException"
    assert words in error["error_data"]["details"] and error["fbtrace_id"]
    assert env.sim.media == {}


async def test_upload_accepts_the_limits_and_checks_the_form(env: Env) -> None:
    """Exactly at the limit is fine (an animated sticker may exceed the static 100 KB); the form
    needs messaging_product=whatsapp and a file (MEDIA: Upload media parameters)."""
    assert (await upload(env, _webp(100 * 1024 + 1, animated=True), "image/webp")).status == 200
    assert (await upload(env, _webp(100 * 1024, animated=False), "image/webp")).status == 200
    assert (await upload(env, b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024 - 3), "image/jpeg")).status == 200
    missing = await upload(env, PNG, "image/png", product=None)
    assert (await missing.json())["error"]["code"] == 100
    assert "messaging_product" in (await missing.json())["error"]["error_data"]["details"]
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", "image/png")
    no_file = await env.client.post(f"/v25.0/{PNID}/media", data=form, headers=AUTH)
    assert "file" in (await no_file.json())["error"]["error_data"]["details"]
    assert len(env.sim.media) == 3


async def test_sandbox_media_control_endpoint_and_media_message_webhook(env: Env) -> None:
    """Newcomers store a user's media with `POST /_sandbox/media` and announce it with
    `media_message_change`, shaped as the messages webhook reference shows media
    (developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/messages/image, .../document,
    .../audio)."""
    resp = await env.client.post(
        f"/_sandbox/media?phone_number_id={PNID}", data=PDF, headers={"Content-Type": "application/pdf"}
    )
    stored = await resp.json()
    assert resp.status == 201 and stored == {
        "id": stored["id"],
        "mime_type": "application/pdf",
        "sha256": hashlib.sha256(PDF).hexdigest(),
        "file_size": len(PDF),
    }
    doc = sim.media_message_change(
        PNID, SEED.display_phone_number, CUSTOMER, "document", stored["id"], "application/pdf", stored["sha256"],
        caption="the invoice", filename="invoice.pdf", wamid="wamid.DOC",
    )  # fmt: skip
    message = doc["value"]["messages"][0]
    assert message["type"] == "document" and message["document"] == {
        "caption": "the invoice",
        "filename": "invoice.pdf",
        "mime_type": "application/pdf",
        "sha256": stored["sha256"],
        "id": stored["id"],
    }
    image = sim.media_message_change(PNID, SEED.display_phone_number, CUSTOMER, "image", "1", "image/png", "ab")
    assert image["value"]["messages"][0]["image"] == {"mime_type": "image/png", "sha256": "ab", "id": "1"}
    voice = sim.media_message_change(PNID, SEED.display_phone_number, CUSTOMER, "voice", "2", "audio/ogg", "cd")
    assert voice["value"]["messages"][0]["type"] == "audio"
    assert voice["value"]["messages"][0]["audio"] == {
        "mime_type": "audio/ogg",
        "sha256": "cd",
        "id": "2",
        "voice": True,
    }
    with pytest.raises(ValueError, match="filename"):
        sim.media_message_change(PNID, "+1", CUSTOMER, "image", "1", "image/png", "ab", filename="x.png")
    env.sim.announce(sim.delivery(SEED.waba_id, [doc]))
    url = (await (await env.client.get(f"/v25.0/{stored['id']}", headers=AUTH)).json())["url"]
    async with env.client.session.get(url, headers=AUTH) as got:
        assert await got.read() == PDF
    refused = await env.client.post(
        "/_sandbox/media?phone_number_id=nope", data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert refused.status == 400


# ---- messages


async def _message_cases(env: Env) -> list[dict[str, Any]]:
    image = await upload_id(env, PNG, "image/png")
    video = await upload_id(env, b"\0\0\0\x18ftypmp42" + b"\0" * 32, "video/mp4")
    audio = await upload_id(env, b"OggS" + b"\0" * 32, "audio/ogg")
    document = await upload_id(env, PDF, "application/pdf")
    sticker = await upload_id(env, _webp(2048, animated=False), "image/webp")
    announce(env, "wamid.IN1")
    return [
        {"type": "text", "text": {"body": "hello", "preview_url": False}},
        {"type": "image", "image": {"id": image, "caption": "a picture"}},
        {"type": "image", "image": {"link": "https://example.com/a.png"}},
        {"type": "video", "video": {"id": video, "caption": "a film"}},
        {"type": "audio", "audio": {"id": audio, "voice": True}},
        {"type": "document", "document": {"id": document, "caption": "invoice", "filename": "invoice.pdf"}},
        {"type": "sticker", "sticker": {"id": sticker}},
        {
            "type": "location",
            "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": "Mitte"},
        },
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {"formatted_name": "Ann Lee", "first_name": "Ann"},
                    "phones": [{"phone": "+1 555 0100", "type": "WORK", "wa_id": "15550100"}],
                    "emails": [{"email": "ann@example.com", "type": "WORK"}],
                    "birthday": "1990-01-31",
                }
            ],
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Pick one"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "yes", "title": "Yes"}}]},
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "header": {"type": "text", "text": "Menu"},
                "body": {"text": "Choose"},
                "footer": {"text": "thanks"},
                "action": {
                    "button": "Options",
                    "sections": [{"title": "A", "rows": [{"id": "r1", "title": "Row 1", "description": "first"}]}],
                },
            },
        },
        {
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "body": {"text": "See"},
                "action": {"name": "cta_url", "parameters": {"display_text": "Open", "url": "https://example.com"}},
            },
        },
        {"type": "reaction", "reaction": {"message_id": "wamid.IN1", "emoji": "\U0001f600"}},
        {"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}},
        {"type": "text", "text": {"body": "a reply"}, "context": {"message_id": "wamid.IN1"}},
    ]


async def test_every_message_type_is_accepted_when_well_formed(env: Env) -> None:
    """Each type as the messages reference and its guides show it is accepted and recorded
    (MESSAGES; .../messages/image-messages, location-messages, contacts-messages,
    interactive-reply-buttons-messages, interactive-list-messages, interactive-cta-url-messages,
    reaction-messages, template-messages)."""
    cases = await _message_cases(env)
    for message in cases:
        resp = await send(env, message)
        answer = await resp.json()
        assert resp.status == 200, (message, answer)
        assert answer["contacts"] == [{"input": CUSTOMER, "wa_id": CUSTOMER}]
        recorded = {k: v for k, v in env.sim.phones[PNID].sent[-1].items() if k != "rendered"}  # templates.py
        assert recorded == {
            "id": answer["messages"][0]["id"],
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            **message,
        }
    assert len(env.sim.phones[PNID].sent) == len(cases)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"type": "text", "text": {"body": "x", "preview_url": "yes"}}, "text[preview_url]"),
        ({"type": "image", "image": {"id": "1", "link": "https://example.com/a.png"}}, "image[id] or image[link]"),
        ({"type": "image", "image": {}}, "image[id] or image[link]"),
        ({"type": "image", "image": {"link": "ftp://example.com/a.png"}}, "image[link]"),
        ({"type": "image", "image": {"link": "https://example.com/a.png", "filename": "a.png"}}, "image[filename]"),
        ({"type": "sticker", "sticker": {"link": "https://example.com/a.webp", "caption": "x"}}, "sticker[caption]"),
        ({"type": "audio", "audio": {"link": "https://example.com/a.ogg", "caption": "x"}}, "audio[caption]"),
        ({"type": "document", "document": {"link": "https://e.com/a.pdf", "caption": "c" * 1025}}, "document[caption]"),
        ({"type": "location", "location": {"latitude": "52.5", "longitude": 13.4}}, "location[latitude]"),
        ({"type": "location", "location": {"latitude": 52.5, "longitude": 181}}, "location[longitude]"),
        ({"type": "contacts", "contacts": [{"name": {"first_name": "Ann"}}]}, "contacts[0][name][formatted_name]"),
        ({"type": "contacts", "contacts": []}, "contacts"),
        ({"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}, "birthday": "31.01.1990"}]}, "birthday"),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "body": {"text": "x"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": str(i), "title": "t"}} for i in range(4)]},
                },
            },
            "interactive[action][buttons]",
        ),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "button",
                    "body": {"text": "x"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "t" * 21}}]},
                },
            },
            "interactive[action][buttons][0][reply][title]",
        ),
        (
            {
                "type": "interactive",
                "interactive": {
                    "type": "list",
                    "body": {"text": "x"},
                    "action": {
                        "button": "b",
                        "sections": [{"rows": [{"id": str(i), "title": "r"} for i in range(11)]}],
                    },
                },
            },
            "at most 10 rows",
        ),
        ({"type": "interactive", "interactive": {"type": "button", "action": {}}}, "interactive[body]"),
        ({"type": "interactive", "interactive": {"type": "carousel", "body": {"text": "x"}}}, "interactive[type]"),
        ({"type": "reaction", "reaction": {"emoji": "x"}}, "reaction[message_id]"),
        (
            {"type": "template", "template": {"name": "t", "language": {"code": "en"}, "components": "x"}},
            "template[components]",
        ),
        ({"type": "text", "text": {"body": "x"}, "context": {"id": "wamid.1"}}, "context[id]"),
        ({"type": "text", "text": {"body": "x"}, "context": {}}, "context[message_id]"),
        ({"type": "poll", "text": {"body": "x"}}, "Param type"),
    ],
)
async def test_malformed_messages_are_refused_naming_the_field(env: Env, message: dict[str, Any], words: str) -> None:
    """A malformed message is error 100 whose details name the offending field, and nothing is
    sent (MESSAGES: the message object and its per-type objects)."""
    resp = await send(env, message)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == 100 and words in error["error_data"]["details"], error
    assert env.sim.phones[PNID].sent == []


async def test_media_id_must_be_uploaded_on_this_number(env: Env) -> None:
    """Sending by an id that is not media uploaded on the number is refused as Graph does:
    100 "Param image['id'] is not a valid whatsapp business account media attachment ID" (MESSAGES,
    media object `id`; the message integrators match on)."""
    env.sim.add_phone("200000000000001", "+15550100002", SEED.waba_id)
    elsewhere = env.sim.add_media("200000000000001", PNG, "image/png", inbound=False)
    from_user = env.sim.add_media(PNID, PNG, "image/png")  # a user's media, not the business's
    for media_id in ("123456789", elsewhere, from_user):
        resp = await send(env, {"type": "image", "image": {"id": media_id}})
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == 100
        assert (
            error["message"] == "(#100) Param image['id'] is not a valid whatsapp business account media attachment ID"
        )
    assert env.sim.phones[PNID].sent == []


# ---- status webhooks


def _verify(receiver: Receiver, secret: str) -> None:
    for headers, body in receiver.got:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected)


async def test_statuses_arrive_in_order_and_signed(env: Env, receiver: Receiver) -> None:
    """After each send the app's callback URL gets sent, delivered, read for that wamid, signed
    with the app secret, in send order; pricing rides on sent and delivered, and a v24+ webhook
    has no conversation (STATUS: syntax comments on `conversation` and `pricing`)."""
    env.sim.clock = lambda: 1_750_000_000.0
    await hook_up(env, receiver)
    wamids = []
    for i in range(4):
        resp = await send(env, {"type": "text", "text": {"body": f"m{i}"}})
        wamids.append((await resp.json())["messages"][0]["id"])
    await env.sim.drain_webhooks()
    statuses = receiver.statuses()
    assert [(s["id"], s["status"]) for s in statuses] == [(w, s) for w in wamids for s in ("sent", "delivered", "read")]
    _verify(receiver, SEED.app_secret)
    sent, delivered, read = statuses[:3]
    free = {"billable": False, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"}
    assert sent == {
        "id": wamids[0],
        "status": "sent",
        "timestamp": "1750000000",
        "recipient_id": CUSTOMER,
        "pricing": free,
    }
    assert delivered["pricing"] == free and "pricing" not in read
    assert all("conversation" not in s for s in statuses)
    doc = json.loads(receiver.got[0][1])
    assert doc["object"] == "whatsapp_business_account" and doc["entry"][0]["id"] == SEED.waba_id
    assert doc["entry"][0]["changes"][0]["value"]["metadata"] == {
        "display_phone_number": SEED.display_phone_number.lstrip("+"),
        "phone_number_id": PNID,
    }
    assert [(e["wamid"], e["status"], e["http_status"]) for e in env.sim.webhook_log] == [
        (s["id"], s["status"], 200) for s in statuses
    ]


async def test_conversation_object_only_before_v24(env: Env, receiver: Receiver) -> None:
    """A v23.0 webhook carries `conversation` (one id per message, `expiration_timestamp` only on
    sent) with sent and delivered; templates are billable (STATUS: <CONVERSATION_ID>,
    <CONVERSATION_EXPIRATION_TIMESTAMP>, <PRICING_TYPE>)."""
    env.sim.clock = lambda: 1_750_000_000.0
    await hook_up(env, receiver, webhook_version="v23.0")
    await send(env, {"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}})
    await env.sim.drain_webhooks()
    sent, delivered, read = receiver.statuses()
    assert sent["conversation"]["expiration_timestamp"] == str(1_750_000_000 + 86400)
    assert sent["conversation"]["origin"] == {"type": "utility"}  # hello_world is a UTILITY template
    assert delivered["conversation"] == {"id": sent["conversation"]["id"], "origin": {"type": "utility"}}
    assert "conversation" not in read and sent["pricing"]["billable"] is True


async def test_undeliverable_recipient_gets_sent_then_failed(env: Env, receiver: Receiver) -> None:
    """An undeliverable recipient: sent, then failed with errors [{code, title, message,
    error_data.details, href}] (STATUS: errors; error code 131026 "Message undeliverable")."""
    await hook_up(env, receiver)
    patched = await env.client.patch(f"/_sandbox/phones/{PNID}", json={"undeliverable": [CUSTOMER]})
    assert patched.status == 200
    wamid = (await (await send(env, {"type": "text", "text": {"body": "x"}})).json())["messages"][0]["id"]
    await env.sim.drain_webhooks()
    sent, failed = receiver.statuses()
    assert (sent["status"], failed["status"], failed["id"]) == ("sent", "failed", wamid)
    (error,) = failed["errors"]
    assert error["code"] == 131026 and error["title"] == error["message"] == "Message undeliverable"
    assert error["error_data"]["details"] and error["href"].endswith("/error-codes/")
    assert "pricing" not in failed
    await env.client.patch(f"/_sandbox/phones/{PNID}", json={"undeliverable": {CUSTOMER: 131049}})
    await send(env, {"type": "text", "text": {"body": "y"}})
    await env.sim.drain_webhooks()
    assert receiver.statuses()[-1]["errors"][0]["code"] == 131049


async def test_auto_statuses_reactions_and_media_type_mismatch(env: Env, receiver: Receiver) -> None:
    """`auto_statuses` chooses the statuses; a reaction only gets `sent` (or `failed` 131009 for
    an unknown message); media of the wrong type fails with 131053 (developers.facebook.com/
    documentation/business-messaging/whatsapp/messages/reaction-messages; MEDIA: 131053)."""
    await hook_up(env, receiver)
    assert (await env.client.patch(f"/_sandbox/phones/{PNID}", json={"auto_statuses": ["sent"]})).status == 200
    bad = await env.client.patch(f"/_sandbox/phones/{PNID}", json={"auto_statuses": ["seen"]})
    assert bad.status == 400
    await send(env, {"type": "text", "text": {"body": "x"}})
    announce(env, "wamid.IN9")
    await env.client.patch(f"/_sandbox/phones/{PNID}", json={"auto_statuses": ["sent", "delivered", "read"]})
    await send(env, {"type": "reaction", "reaction": {"message_id": "wamid.IN9", "emoji": "\U0001f44d"}})
    await send(env, {"type": "reaction", "reaction": {"message_id": "wamid.NEVER", "emoji": "\U0001f44d"}})
    pdf = await upload_id(env, PDF, "application/pdf")
    await send(env, {"type": "image", "image": {"id": pdf}})
    await env.sim.drain_webhooks()
    got = [(s["status"], s.get("errors", [{}])[0].get("code")) for s in receiver.statuses()]
    assert got == [("sent", None), ("sent", None), ("failed", 131009), ("failed", 131053)]


async def test_failed_deliveries_are_retried_with_backoff(env: Env, receiver: Receiver) -> None:
    """A delivery not answered 200 is tried again (Meta: "retried immediately, then a few more
    times with decreasing frequency over the next 7 days"; here a few tries with a short backoff),
    and later statuses wait for it
    (developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/overview)."""
    await hook_up(env, receiver)
    receiver.answers = [500, 503]
    await env.client.patch(f"/_sandbox/phones/{PNID}", json={"auto_statuses": ["sent", "delivered"]})
    await send(env, {"type": "text", "text": {"body": "x"}})
    await env.sim.drain_webhooks()
    assert [(e["status"], e["http_status"], e["attempt"]) for e in env.sim.webhook_log] == [
        ("sent", 500, 1),
        ("sent", 503, 2),
        ("sent", 200, 3),
        ("delivered", 200, 1),
    ]
    assert receiver.got[0][1] == receiver.got[2][1]
    receiver.answers = [500] * 4
    await send(env, {"type": "text", "text": {"body": "y"}})
    await env.sim.drain_webhooks()
    assert [e["http_status"] for e in env.sim.webhook_log[4:]] == [500, 500, 500, 500, 200]


async def test_statuses_never_hold_up_the_graph_answer(env: Env, receiver: Receiver) -> None:
    """The send is answered while the receiver is still busy: posting runs in the background
    (STATUS: statuses arrive as separate, later webhooks)."""
    await hook_up(env, receiver)
    receiver.gate = asyncio.Event()
    resp = await asyncio.wait_for(send(env, {"type": "text", "text": {"body": "x"}}), timeout=5)
    assert resp.status == 200 and env.sim.webhook_log == []
    receiver.gate.set()
    await env.sim.drain_webhooks()
    assert [e["status"] for e in env.sim.webhook_log] == ["sent", "delivered", "read"]


async def test_mark_read_still_works_and_posts_no_status(env: Env, receiver: Receiver) -> None:
    """Read receipts and typing indicators are no sends: no status webhooks follow
    (developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read)."""
    await hook_up(env, receiver)
    announce(env, "wamid.IN2")
    for extra in ({}, {"typing_indicator": {"type": "text"}}):
        body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN2", **extra}
        resp = await env.client.post(f"/v25.0/{PNID}/messages", json=body, headers=AUTH)
        assert await resp.json() == {"success": True}
    await env.sim.drain_webhooks()
    assert receiver.got == [] and len(env.sim.phones[PNID].read) == 2


async def test_no_callback_url_or_no_messages_field_means_no_webhooks(env: Env, receiver: Receiver) -> None:
    """Webhooks go only to an app with a callback URL subscribed to the `messages` field
    (developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/overview)."""
    await send(env, {"type": "text", "text": {"body": "x"}})
    await hook_up(env, receiver, subscribed_fields=["calls"])
    await send(env, {"type": "text", "text": {"body": "y"}})
    await env.sim.drain_webhooks()
    assert receiver.got == [] and env.sim.webhook_log == []
    created = await env.client.post(
        "/_sandbox/apps", json={"app_id": "2", "app_secret": "s2", "callback_url": receiver.url}
    )
    assert created.status == 201 and (await created.json())["callback_url"] == receiver.url
    for bad in ({"callback_url": "ftp://x"}, {"webhook_version": "25"}, {"colour": "red"}):
        assert (await env.client.patch(f"/_sandbox/apps/{SEED.app_id}", json=bad)).status == 400


async def test_background_posting_stops_when_the_app_shuts_down(aiohttp_server, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    """Shutting the simulator's aiohttp app down cancels the status workers (on_cleanup), even
    while a delivery hangs."""
    simulator = sim.seeded(SEED)
    server = await aiohttp_server(simulator.app())
    simulator.update_app(SEED.app_id, callback_url=receiver.url)
    receiver.gate = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        body = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {"body": "x"}}
        async with session.post(server.make_url(f"/v25.0/{PNID}/messages"), json=body, headers=AUTH) as resp:
            assert resp.status == 200
    await asyncio.wait_for(receiver.arrived.wait(), timeout=5)  # the first delivery now hangs there
    workers = [t for t in asyncio.all_tasks() if t.get_name().startswith("meta-sandbox-statuses-")]
    assert len(workers) == 1
    await server.close()
    assert workers[0].done() and not [t for t in asyncio.all_tasks() if t.get_name().startswith("meta-sandbox-")]
    receiver.gate.set()
