"""The Meta simulator's templates, the 24-hour window and the template status webhook, over loopback
HTTP (and pywa, an independent client, changed only in its base URL).

Docs (each test names the page it follows):
- TEMPLATES: developers.facebook.com/documentation/business-messaging/whatsapp/templates/template-management/
- SEND: developers.facebook.com/documentation/business-messaging/whatsapp/messages/template-messages/
- ERRORS: developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/
- STATUS_WEBHOOK: developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/message_template_status_update
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pywa import WhatsApp
from pywa.errors import ReEngagementMessage, TemplateNotExists, TemplateParamCountMismatch, TemplatePaused
from pywa.types.templates import BodyText, TemplateLanguage, TemplateStatus, TemplateStatusUpdate, URLButton

from thoth_pbx.sandbox import meta as sim

SEED = sim.Seed()
PNID, WABA = SEED.phone_number_id, SEED.waba_id
AUTH = {"Authorization": f"Bearer {SEED.token}"}
CUSTOMER = "15550002222"
T0 = 1_780_000_000.0
DAY = 24 * 3600


@dataclass
class Env:
    sim: sim.MetaSimulator
    client: TestClient  # type: ignore[type-arg]
    now: list[float]

    async def get(self, path: str, headers: dict[str, str] | None = AUTH, **query: str) -> tuple[int, Any]:
        resp = await self.client.get(path, params=query, headers=headers)
        return resp.status, await resp.json()

    async def send(self, message: dict[str, Any], to: str = CUSTOMER) -> tuple[int, Any]:
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **message}
        resp = await self.client.post(f"/v25.0/{PNID}/messages", json=body, headers=AUTH)
        return resp.status, await resp.json()


@dataclass
class Receiver:
    url: str = ""
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]


@pytest.fixture
async def env(aiohttp_server, aiohttp_client) -> Env:  # type: ignore[no-untyped-def]
    simulator = sim.seeded(SEED)
    simulator.status_poster.backoff = 0.001
    now = [T0]
    simulator.clock = lambda: now[0]
    server = await aiohttp_server(simulator.app())
    return Env(simulator, await aiohttp_client(server), now)


@pytest.fixture
async def receiver(env: Env, aiohttp_server) -> Receiver:  # type: ignore[no-untyped-def]
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = await aiohttp_server(app)
    hook.url = str(server.make_url("/hook"))
    env.sim.update_app(SEED.app_id, callback_url=hook.url)
    return hook


def template(name: str, code: str = "en_US", *components: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = {"name": name, "language": {"code": code}}
    if components:
        value["components"] = list(components)
    return {"type": "template", "template": value}


def body(*values: str) -> dict[str, Any]:
    return {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}


def statuses(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        s
        for doc in receiver.docs()
        for c in doc["entry"][0]["changes"]
        if c["field"] == "messages"
        for s in c["value"]["statuses"]
    ]


# ---- the list


async def test_templates_are_listed_as_graph_answers(env: Env) -> None:
    """`GET /{waba_id}/message_templates`: `data` with the default fields, Graph's cursor paging
    (`next` / `previous` only when there is such a page), `fields`, the filters and `summary`
    (TEMPLATES, "Get templates"; pywa's get_templates sends these parameters)."""
    status, page = await env.get(f"/v25.0/{WABA}/message_templates")
    assert status == 200
    names = [(t["name"], t["language"], t["status"]) for t in page["data"]]
    assert names == [
        ("hello_world", "en_US", "APPROVED"),
        ("order_update", "en_US", "APPROVED"),
        ("order_update", "ru", "APPROVED"),
        ("invoice", "en_US", "APPROVED"),
        ("track_parcel", "en_US", "APPROVED"),
        ("promo", "en_US", "PAUSED"),
        ("old_offer", "en_US", "REJECTED"),
        ("welcome_back", "en_US", "PENDING"),
        ("legacy_notice", "en_US", "DISABLED"),
    ]
    assert all(
        set(t) == {"name", "parameter_format", "components", "language", "status", "category", "id"}
        for t in page["data"]
    )
    order = page["data"][1]
    assert order["components"] == [
        {
            "type": "BODY",
            "text": "Hi {{1}}, your order {{2}} has shipped.",
            "example": {"body_text": [["Anna", "#1234"]]},
        }
    ]
    assert set(page["paging"]["cursors"]) == {"before", "after"} and "next" not in page["paging"]

    seen: list[str] = []
    url: str | None = str(env.client.make_url(f"/v25.0/{WABA}/message_templates?limit=4&fields=name"))
    while url:
        async with env.client.session.get(url, headers=AUTH) as resp:
            chunk = await resp.json()
        seen += [t["name"] for t in chunk["data"]]
        assert all(set(t) == {"name", "id"} for t in chunk["data"])
        url = chunk["paging"].get("next")
        assert ("previous" in chunk["paging"]) == (len(seen) > 4)
    assert seen == [n for n, _, _ in names]

    async def listed(**query: str) -> list[str]:
        status, found = await env.get(f"/v25.0/{WABA}/message_templates", **query)
        assert status == 200, found
        return [f"{t['name']}:{t['language']}" for t in found["data"]]

    assert await listed(language="ru") == ["order_update:ru"]
    assert await listed(name="ORDER") == ["order_update:en_US", "order_update:ru"]
    assert await listed(status="PAUSED,REJECTED") == ["promo:en_US", "old_offer:en_US"]
    assert await listed(category="MARKETING", status="APPROVED") == []
    assert await listed(content="invoice") == ["invoice:en_US"]
    _, summed = await env.get(f"/v25.0/{WABA}/message_templates", status="APPROVED", summary="total_count")
    assert summed["summary"] == {"total_count": 5}
    _, one = await env.get(f"/v25.0/{order['id']}", fields="name,status,category")
    assert one == {"name": "order_update", "status": "APPROVED", "category": "UTILITY", "id": order["id"]}


async def test_template_list_auth_follows_graph(env: Env) -> None:
    """The list needs a token (104), one that reaches the WABA (100 subcode 33) with
    whatsapp_business_management (10); unknown fields are 100 (TEMPLATES; Graph errors)."""
    status, answer = await env.get(f"/v25.0/{WABA}/message_templates", headers=None)
    assert (status, answer["error"]["code"]) == (400, 104)
    env.sim.add_token("EAAGother", SEED.app_id, waba_ids=["1"])
    status, answer = await env.get(f"/v25.0/{WABA}/message_templates", headers={"Authorization": "Bearer EAAGother"})
    assert (status, answer["error"]["code"], answer["error"]["error_subcode"]) == (400, 100, 33)
    env.sim.add_token("EAAGsendonly", SEED.app_id, scopes=["whatsapp_business_messaging"])
    status, answer = await env.get(f"/v25.0/{WABA}/message_templates", headers={"Authorization": "Bearer EAAGsendonly"})
    assert (status, answer["error"]["code"]) == (403, 10)
    status, answer = await env.get("/v25.0/999999/message_templates")
    assert (status, answer["error"]["code"], answer["error"]["error_subcode"]) == (400, 100, 33)
    status, answer = await env.get(f"/v25.0/{WABA}/message_templates", fields="name,bogus")
    assert (status, answer["error"]["code"]) == (400, 100) and "(bogus)" in answer["error"]["message"]


# ---- sending


@pytest.mark.parametrize(
    ("message", "code", "http", "details"),
    [
        (template("nope"), 132001, 404, "template name (nope) does not exist in en_US"),
        (template("hello_world", "ru"), 132001, 404, "template name (hello_world) does not exist in ru"),
        (template("old_offer"), 132001, 404, "template name (old_offer) does not exist in en_US"),
        (template("welcome_back", "en_US", body("Ann")), 132001, 404, "does not exist in en_US"),
        (template("promo", "en_US", body("20%")), 132015, 400, "paused due to low quality"),
        (template("legacy_notice"), 132016, 400, "permanently disabled"),
        (
            template("order_update", "en_US", body("Anna")),
            132000,
            400,
            "body: number of localizable_params (1) does not match the expected number of params (2)",
        ),
        (template("order_update"), 132000, 400, "body: number of localizable_params (0)"),
        (template("hello_world", "en_US", body("x")), 132000, 400, "expected number of params (0)"),
        (template("invoice", "en_US", body("INV-1")), 132000, 400, "header: number of localizable_params (0)"),
        (
            template(
                "invoice",
                "en_US",
                {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://e.com/a.png"}}]},
                body("INV-1"),
            ),
            132012,
            400,
            "header: Format mismatch, expected DOCUMENT, received IMAGE",
        ),
        (template("track_parcel"), 132000, 400, "button at index 0: number of localizable_params (0)"),
        (
            template(
                "track_parcel",
                "en_US",
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "x"}],
                },
            ),
            132012,
            400,
            "button at index 0: Format mismatch, expected URL",
        ),
    ],
)
async def test_template_sends_are_checked_against_the_waba_templates(
    env: Env, message: dict[str, Any], code: int, http: int, details: str
) -> None:
    """A template must exist in the language and be APPROVED (132001; paused 132015, disabled
    132016) and get exactly the parameters each component takes (132000; wrong kind 132012), in
    Graph's error envelope; nothing is sent (ERRORS; SEND)."""
    status, answer = await env.send(message)
    error = answer["error"]
    assert (status, error["code"], error["type"]) == (http, code, "OAuthException"), answer
    assert error["message"].startswith(f"(#{code}) ") and error["fbtrace_id"]
    assert error["error_data"]["messaging_product"] == "whatsapp" and details in error["error_data"]["details"]
    assert env.sim.phones[PNID].sent == []


async def test_a_template_send_keeps_what_the_customer_sees(env: Env) -> None:
    """An accepted template send is recorded with `rendered`: header, body with the values filled
    in, footer, buttons with the URL suffix, and `text` (SEND: header / body / button parameters;
    text, currency and date_time parameters show their text or fallback_value)."""
    sends = [
        template("order_update", "en_US", body("Anna", "#77")),
        template(
            "order_update",
            "ru",
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Анна"},
                    {"type": "currency", "currency": {"fallback_value": "$10", "code": "USD", "amount_1000": 10000}},
                ],
            },
        ),
        template(
            "invoice",
            "en_US",
            {
                "type": "header",
                "parameters": [{"type": "document", "document": {"link": "https://e.com/i.pdf", "filename": "i.pdf"}}],
            },
            body("INV-9"),
        ),
        template(
            "track_parcel",
            "en_US",
            {"type": "button", "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "XYZ"}]},
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": "1",
                "parameters": [{"type": "payload", "payload": "stop"}],
            },
        ),
        template("hello_world"),
    ]
    for message in sends:
        status, answer = await env.send(message)
        assert status == 200, answer
    shown = [m["rendered"] for m in env.sim.phones[PNID].sent]
    assert shown[0]["body"] == shown[0]["text"] == "Hi Anna, your order #77 has shipped."
    assert shown[1]["text"] == "Здравствуйте, Анна! Ваш заказ $10 отправлен."
    assert shown[2]["header"] == {"format": "DOCUMENT", "link": "https://e.com/i.pdf", "filename": "i.pdf"}
    assert shown[2]["text"] == "Your invoice INV-9 is attached.\nThank you for your business"
    assert shown[3]["buttons"] == [
        {"type": "URL", "text": "Track it", "url": "https://track.example.com/p/XYZ"},
        {"type": "QUICK_REPLY", "text": "Stop updates", "payload": "stop"},
    ]
    assert shown[4]["text"].startswith("Hello World\nWelcome and congratulations!!")
    assert shown[4]["text"].endswith("\nWhatsApp Business Platform sample message")
    assert [s["category"] for s in shown] == ["UTILITY"] * 5
    assert {"name", "language"} <= set(env.sim.phones[PNID].sent[0]["template"])  # the request as sent


# ---- the 24-hour window


async def test_free_form_outside_the_window_fails_with_131047(env: Env, receiver: Receiver) -> None:
    """Free-form messages go out only within 24 hours of the customer's last message; outside,
    Meta accepts the send and reports `failed` with 131047 "Re-engagement message" in the status
    webhook; a template always goes (ERRORS: 131047; the window opens from the messages webhook,
    here `announce()` at `sim.clock`)."""
    text = {"type": "text", "text": {"body": "hi"}}
    status, answer = await env.send(text)
    assert status == 200 and answer["messages"][0]["id"].startswith("wamid.")
    await env.sim.drain_webhooks()
    (failed,) = statuses(receiver)
    assert failed["status"] == "failed" and failed["id"] == answer["messages"][0]["id"]
    assert failed["errors"][0]["code"] == 131047 and failed["errors"][0]["title"] == "Re-engagement message"
    assert "24 hours" in failed["errors"][0]["error_data"]["details"]
    assert not env.sim.window_open(PNID, CUSTOMER)

    change = sim.message_change(PNID, SEED.display_phone_number, CUSTOMER, "hello", wamid="wamid.IN1")
    env.sim.announce(sim.delivery(WABA, [change]))  # the customer writes at T0
    env.now[0] = T0 + DAY - 1
    assert env.sim.window_open(PNID, "+" + CUSTOMER)
    await env.send(text)
    env.now[0] = T0 + DAY
    await env.send(text)
    await env.send(template("hello_world"))
    await env.sim.drain_webhooks()
    got = [(s["status"], (s.get("errors") or [{}])[0].get("code")) for s in statuses(receiver)[1:]]
    assert got == [
        ("sent", None),
        ("delivered", None),
        ("read", None),
        ("failed", 131047),
        ("sent", None),
        ("delivered", None),
        ("read", None),
    ]
    assert statuses(receiver)[-3]["pricing"]["category"] == "utility"  # priced by the template's category
    assert len(env.sim.phones[PNID].sent) == 4 and env.sim.phones[PNID].window_closed == [
        env.sim.phones[PNID].sent[0]["id"],
        env.sim.phones[PNID].sent[2]["id"],
    ]


async def test_window_in_the_answer_or_off_per_phone(env: Env) -> None:
    """`window_error: response` refuses the send itself with 131047 in Graph's envelope (Meta
    reports some errors both ways: ERRORS, "Receiving Errors"); `enforce_window: false` lets
    free-form messages through; a BSUID customer has a window of their own."""
    patched = await env.client.patch(f"/_sandbox/phones/{PNID}", json={"window_error": "response"})
    assert patched.status == 200
    status, answer = await env.send({"type": "text", "text": {"body": "hi"}})
    error = answer["error"]
    assert (status, error["code"], error["message"]) == (400, 131047, "(#131047) Re-engagement message")
    assert "24 hours" in error["error_data"]["details"] and env.sim.phones[PNID].sent == []
    env.sim.customer_wrote(PNID, "US.13491208655302741918")
    body_ = {
        "messaging_product": "whatsapp",
        "recipient": "US.13491208655302741918",
        "type": "text",
        "text": {"body": "x"},
    }
    resp = await env.client.post(f"/v25.0/{PNID}/messages", json=body_, headers=AUTH)
    assert resp.status == 200, await resp.text()
    bad = await env.client.patch(f"/_sandbox/phones/{PNID}", json={"window_error": "never"})
    assert bad.status == 400
    assert (await env.client.patch(f"/_sandbox/phones/{PNID}", json={"enforce_window": False})).status == 200
    status, _ = await env.send({"type": "text", "text": {"body": "hi"}})
    assert status == 200


# ---- template status webhooks


def _signed(receiver: Receiver) -> bool:
    return all(
        hmac.compare_digest(
            headers["X-Hub-Signature-256"],
            "sha256=" + hmac.new(SEED.app_secret.encode(), raw, hashlib.sha256).hexdigest(),
        )
        for headers, raw in receiver.got
    )


async def test_status_change_posts_the_template_status_webhook(env: Env, receiver: Receiver) -> None:
    """A review outcome posts `message_template_status_update` to subscribed apps, signed like
    every webhook: entry id = WABA, `time`, value event / message_template_id (a number) / name /
    language / reason / category, `disable_info` when disabled; the template's status follows
    (STATUS_WEBHOOK)."""
    promo = env.sim.template(WABA, "promo", "en_US")
    doc = env.sim.set_template_status(promo.id, "APPROVED")
    env.now[0] = T0 + 60
    env.sim.set_template_status(promo.id, "DISABLED")
    env.sim.set_template_status(
        env.sim.template(WABA, "welcome_back", "en_US").id, "REJECTED", reason="INCORRECT_CATEGORY"
    )
    await env.sim.drain_webhooks()
    approved, disabled, rejected = receiver.docs()
    assert (
        approved
        == doc
        == {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": WABA,
                    "time": int(T0),
                    "changes": [
                        {
                            "field": "message_template_status_update",
                            "value": {
                                "event": "APPROVED",
                                "message_template_id": int(promo.id),
                                "message_template_name": "promo",
                                "message_template_language": "en_US",
                                "reason": "NONE",
                                "message_template_category": "MARKETING",
                            },
                        }
                    ],
                }
            ],
        }
    )
    assert disabled["entry"][0]["changes"][0]["value"]["disable_info"] == {"disable_date": int(T0) + 60}
    assert rejected["entry"][0]["changes"][0]["value"]["reason"] == "INCORRECT_CATEGORY"
    assert _signed(receiver)
    assert (promo.status, env.sim.template(WABA, "welcome_back", "en_US").rejected_reason) == (
        "DISABLED",
        "INCORRECT_CATEGORY",
    )
    env.sim.update_app(SEED.app_id, subscribed_fields=["messages"])  # not subscribed: nothing posted
    env.sim.set_template_status(promo.id, "REINSTATED")
    await env.sim.drain_webhooks()
    assert len(receiver.got) == 3 and promo.status == "APPROVED"
    with pytest.raises(ValueError, match="event must be one of"):
        env.sim.set_template_status(promo.id, "GONE")


async def test_control_endpoints_add_and_review_templates(env: Env, receiver: Receiver) -> None:
    """For people trying the simulator: `POST /_sandbox/templates` adds a template (here with a
    TEXT header variable, COMPONENTS), `POST /_sandbox/templates/{id}/status` reviews it and
    posts the webhook; bad bodies are 400."""
    components = [
        {"type": "HEADER", "format": "TEXT", "text": "Visit {{1}}"},
        {"type": "BODY", "text": "See you at {{1}}.", "example": {"body_text": [["10:00"]]}},
    ]
    resp = await env.client.post(
        "/_sandbox/templates", json={"name": "visit", "language": "de", "components": components}
    )
    assert resp.status == 201, await resp.text()
    added = await resp.json()
    assert (added["waba_id"], added["status"]) == (WABA, "APPROVED")
    header = {"type": "header", "parameters": [{"type": "text", "text": "Dr. Who"}]}
    status, _ = await env.send(template("visit", "de", header, body("10:30")))
    assert status == 200 and env.sim.phones[PNID].sent[-1]["rendered"]["text"] == "Visit Dr. Who\nSee you at 10:30."
    resp = await env.client.post(f"/_sandbox/templates/{added['id']}/status", json={"event": "PAUSED"})
    assert resp.status == 200 and (await resp.json())["entry"][0]["changes"][0]["value"]["event"] == "PAUSED"
    status, answer = await env.send(template("visit", "de", header, body("10:30")))
    assert (status, answer["error"]["code"]) == (400, 132015)
    await env.sim.drain_webhooks()
    reviews = [c["value"] for d in receiver.docs() for c in d["entry"][0]["changes"] if c["field"] != "messages"]
    assert [(r["message_template_name"], r["event"]) for r in reviews] == [("visit", "PAUSED")]
    for path, payload in (
        ("/_sandbox/templates", {"name": "Bad Name", "language": "de", "components": components}),
        ("/_sandbox/templates", {"name": "x", "language": "de", "components": [{"type": "FOOTER", "text": "f"}]}),
        (f"/_sandbox/templates/{added['id']}/status", {"event": "GONE"}),
        ("/_sandbox/templates/1/status", {"event": "APPROVED"}),
    ):
        assert (await env.client.post(path, json=payload)).status == 400, payload


# ---- pywa


async def test_pywa_lists_sends_and_parses_templates(env: Env) -> None:
    """pywa's get_templates (every TemplateDetails field, summary), send_template and its typed
    errors, and its parser of the status webhook all work against the simulator."""
    wa = WhatsApp(phone_id=PNID, token=SEED.token, api_version="25.0", waba_id=WABA, session=httpx.Client(timeout=10))
    wa.api._session.base_url = str(env.client.make_url("/v25.0"))
    try:
        found = await asyncio.to_thread(wa.get_templates, statuses=[TemplateStatus.APPROVED])
        assert [t.name for t in found] == ["hello_world", "order_update", "order_update", "invoice", "track_parcel"]
        assert found.total_count == 5 and found.message_template_limit == 250
        sent = await asyncio.to_thread(
            wa.send_template,
            to=CUSTOMER,
            name="order_update",
            language=TemplateLanguage.ENGLISH_US,
            params=[BodyText.params("Anna", "#5")],
        )
        assert sent.id.startswith("wamid.")
        assert env.sim.phones[PNID].sent[-1]["rendered"]["text"] == "Hi Anna, your order #5 has shipped."
        tracked = await asyncio.to_thread(
            wa.send_template,
            to=CUSTOMER,
            name="track_parcel",
            language=TemplateLanguage.ENGLISH_US,
            params=[URLButton.params(url_variable="Q1", index=0)],
        )
        assert tracked.id.startswith("wamid.")
        assert env.sim.phones[PNID].sent[-1]["rendered"]["buttons"][0]["url"] == "https://track.example.com/p/Q1"
        for name, params, error in (
            ("nope", [], TemplateNotExists),
            ("order_update", [BodyText.params("Anna")], TemplateParamCountMismatch),
            ("promo", [BodyText.params("5%")], TemplatePaused),
        ):
            with pytest.raises(error):
                await asyncio.to_thread(
                    wa.send_template, to=CUSTOMER, name=name, language=TemplateLanguage.ENGLISH_US, params=params
                )
        env.sim.phones[PNID].window_error = "response"
        with pytest.raises(ReEngagementMessage):
            await asyncio.to_thread(wa.send_message, to=CUSTOMER, text="outside the window")
        doc = env.sim.set_template_status(env.sim.template(WABA, "promo", "en_US").id, "APPROVED")
        update = TemplateStatusUpdate.from_update(wa, doc)
        assert (update.new_status, update.template_name, update.template_language) == (
            TemplateStatus.APPROVED,
            "promo",
            TemplateLanguage.ENGLISH_US,
        )
    finally:
        wa.api._session.close()
