"""The simulated portal's Open Lines chat side, checked with plain HTTP and tiny aiohttp servers.

Pages (b24restdocs, api-reference/...; published under apidocs.bitrix24.com/api-reference/...html):
imopenlines/imconnector/imconnector-send-messages, -update-messages, -delete-messages,
-send-status-delivery, -send-status-reading; chats/messages/im-message-add;
imopenlines/imconnector/events/on-im-connector-message-add, -update, -delete."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web

from tests.support.bitrix import USERS
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal

CONNECTOR = "thoth_whatsapp"


@dataclass
class Env:
    sim: BitrixSimulator
    portal: Portal
    token: str
    http: httpx.AsyncClient
    line: int

    async def rest(self, method: str, **params: Any) -> tuple[int, Any]:
        resp = await self.http.post(method, json={**params, "auth": self.token})
        return resp.status_code, resp.json()

    async def send(self, *messages: dict[str, Any], line: int | None = None) -> dict[str, Any]:
        status, body = await self.rest(
            "imconnector.send.messages", CONNECTOR=CONNECTOR, LINE=line or self.line, MESSAGES=list(messages)
        )
        assert status == 200, body
        result: dict[str, Any] = body["result"]
        return result


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    sim = BitrixSimulator()
    await sim.start()
    portal = sim.add_portal(users=USERS)
    portal.installed = True
    portal.application_token = "app-token-openlines"
    token = sim.issue_tokens(portal)["access_token"]
    async with httpx.AsyncClient(base_url=portal.client_endpoint) as http:
        resp = await http.post("imopenlines.config.add", json={"auth": token, "PARAMS": {"LINE_NAME": "WA"}})
        line = int(resp.json()["result"])
        resp = await http.post(
            "imconnector.activate", json={"auth": token, "CONNECTOR": CONNECTOR, "LINE": line, "ACTIVE": 1}
        )
        assert resp.json()["result"] is True
        yield Env(sim, portal, token, http, line)
    await sim.stop()


def entry(user: str, chat: str, message_id: str, text: str = "", **message: Any) -> dict[str, Any]:
    return {
        "user": {"id": user, "name": "Customer"},
        "message": {"id": message_id, "text": text, **message},
        "chat": {"id": chat},
    }


@dataclass
class Receiver:
    """A tiny app handler: every form it got, and what the portal's chat held when it arrived."""

    url: str = ""
    forms: list[dict[str, str]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    seen_in_chat: list[list[int]] = field(default_factory=list)


async def receiver(aiohttp_server: Callable[..., Awaitable[Any]], env: Env) -> Receiver:
    got = Receiver()

    async def handler(request: web.Request) -> web.Response:
        pairs = parse_qsl(await request.text(), keep_blank_values=True)
        got.forms.append(dict(pairs))
        got.content_types.append(request.content_type)
        got.seen_in_chat.append([m.id for c in env.portal.chats.values() for m in c.messages])
        return web.json_response({"handled": len(got.forms)})

    app = web.Application()
    app.router.add_post("/bitrix/events", handler)
    server = await aiohttp_server(app)
    got.url = str(server.make_url("/bitrix/events"))
    return got


async def bind(env: Env, event: str, url: str) -> None:
    status, body = await env.rest("event.bind", event=event, handler=url)
    assert (status, body["result"]) == (200, True)


async def test_each_chat_keeps_its_im_chat_session_and_users(env: Env) -> None:
    """imopenlines/imconnector/imconnector-send-messages: chat.id -> one chat and session,
    user.id -> one Bitrix user; keys lower-cased; NOT_ACTIVE_LINE, ERROR_ARGUMENT, app context only.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-messages.html"""
    first = await env.send(entry("15550001", "15550001", "wamid.1", "Hello", date=1767225600))
    second = await env.send(
        entry("15550001", "15550001", "wamid.2", "[b]again[/b]\nline two"),
        entry("15550002", "15550002", "wamid.3", "other customer"),
    )
    (r1,), (r2, r3) = first["DATA"]["RESULT"], second["DATA"]["RESULT"]
    assert first["SUCCESS"] is second["SUCCESS"] is True and r1["SUCCESS"] is r2["SUCCESS"] is True
    assert r1["session"] == r2["session"] != r3["session"]
    assert r1["user"] == r2["user"] != r3["user"]
    assert r1["message"] == {"id": "wamid.1", "text": "Hello", "date": 1767225600} and r1["chat"] == {"id": "15550001"}

    chat = env.portal.chat(CONNECTOR, env.line, "15550001")
    assert chat is not None and chat.users == {"15550001": int(r1["user"])}
    assert (str(chat.chat_id), str(chat.session_id)) == (r1["session"]["CHAT_ID"], r1["session"]["ID"])
    assert [(m.kind, m.external_id, m.text, m.external_user, m.author_id) for m in chat.messages] == [
        ("incoming", "wamid.1", "Hello", "15550001", int(r1["user"])),
        ("incoming", "wamid.2", "[b]again[/b]\nline two", "15550001", int(r1["user"])),
    ]
    assert chat.messages[0].date == 1767225600 and chat.messages[0].id != chat.messages[1].id
    assert env.portal.chat_by_id(int(r3["session"]["CHAT_ID"])) is env.portal.chat(CONNECTOR, env.line, "15550002")

    # the same external user in another chat stays the same Bitrix user; upper-case keys are read
    third = await env.send(
        {"USER": {"ID": "15550001"}, "MESSAGE": {"ID": "wamid.4", "TEXT": "hi"}, "CHAT": {"ID": "g"}}
    )
    (r4,) = third["DATA"]["RESULT"]
    assert r4["user"] == r1["user"] and r4["session"]["CHAT_ID"] not in (
        r1["session"]["CHAT_ID"],
        r3["session"]["CHAT_ID"],
    )

    # an item without text or files fails alone
    empty = await env.send(entry("15550001", "15550001", "wamid.5"))
    assert empty["SUCCESS"] is False and empty["DATA"]["RESULT"][0]["SUCCESS"] is False
    assert empty["DATA"]["RESULT"][0]["ERRORS"] and len(chat.messages) == 2

    status, body = await env.rest(
        "imconnector.send.messages", CONNECTOR=CONNECTOR, LINE=env.line + 50, MESSAGES=[entry("1", "1", "m")]
    )
    assert (status, body["error"]) == (400, "NOT_ACTIVE_LINE")
    status, body = await env.rest(
        "imconnector.send.messages", CONNECTOR=CONNECTOR, LINE=env.line, MESSAGES=[{"user": {"id": "1"}, "chat": {}}]
    )
    assert (status, body) == (
        400,
        {
            "error": "ERROR_ARGUMENT",
            "error_description": "The incorrect structure of a message inside MESSAGES parameter",
        },
    )
    hook = env.sim.add_webhook(env.portal)
    resp = await env.http.post(
        f"{hook.user_id}/{hook.code}/imconnector.send.messages",
        json={"CONNECTOR": CONNECTOR, "LINE": env.line, "MESSAGES": [entry("1", "1", "m", "x")]},
    )
    assert (resp.status_code, resp.json()["error"]) == (403, "WRONG_AUTH_TYPE")


async def test_files_are_fetched_by_the_portal_and_failures_stay_visible(env: Env, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """imopenlines/imconnector/imconnector-send-messages: `files: [{url, name}]`, "the url link must
    be accessible from Bitrix24"; the portal downloads each one after answering.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-messages.html"""
    picture = b"\x89PNG\r\n\x1a\n tiny picture"

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=picture, content_type="image/png")

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404, text="gone")

    app = web.Application()
    app.router.add_get("/media/pic.png", ok)
    app.router.add_get("/media/gone.pdf", gone)
    files = await aiohttp_server(app)
    pic_url, gone_url = str(files.make_url("/media/pic.png")), str(files.make_url("/media/gone.pdf"))
    refused_url = "http://127.0.0.1:1/nothing.txt"
    await env.send(
        entry(
            "15550001",
            "15550001",
            "wamid.f",
            files=[{"url": pic_url, "name": "pic.png"}, {"url": gone_url, "name": "gone.pdf"}, {"url": refused_url}],
        )
    )
    await env.sim.files_fetched()

    chat = env.portal.chat(CONNECTOR, env.line, "15550001")
    assert chat is not None
    (message,) = chat.messages
    pic, lost, refused = message.files
    assert pic.as_json() == {
        "url": pic_url,
        "name": "pic.png",
        "status": 200,
        "sha256": hashlib.sha256(picture).hexdigest(),
        "size": len(picture),
        "mime": "image/png",
        "error": None,
        "done": True,
    }
    assert (lost.status, lost.error, lost.done, lost.ok, lost.sha256) == (404, "HTTP 404", True, False, None)
    assert (refused.name, refused.status, refused.done, refused.ok) == ("nothing.txt", None, True, False)
    assert refused.error
    assert sorted(message.markers) == ["File could not be loaded: gone.pdf", "File could not be loaded: nothing.txt"]
    assert "File could not be loaded: gone.pdf" in message.shown

    view = (await env.http.get(f"{env.sim.base_url}/_sandbox/portals/{env.portal.member_id}/openlines")).json()
    assert [(f["name"], f["status"], f["sha256"]) for f in view["files"]] == [
        ("pic.png", 200, hashlib.sha256(picture).hexdigest()),
        ("gone.pdf", 404, None),
        ("nothing.txt", None, None),
    ]
    assert {f["message_id"] for f in view["files"]} == {message.id}
    assert view["chats"][0]["messages"][0]["markers"] == message.markers
    assert view["connector_status"] == [
        {"connector": CONNECTOR, "line": env.line, "active": True, "error": False, "STATUS": True, "data": {}}
    ]
    assert view["lines"] == [{"ID": env.line, "LINE_NAME": "WA", "ACTIVE": "Y"}]
    assert (await env.http.get(f"{env.sim.base_url}/_sandbox/portals/nobody/openlines")).status_code == 404


async def test_delivery_and_reading_need_the_documented_shape_and_mark_the_operator_message(env: Env) -> None:
    """imopenlines/imconnector/imconnector-send-status-delivery and -reading: MESSAGES of
    {im: {chat_id, message_id}, message: {id: [..], date}, chat: {id}}; "even for a single message,
    pass an array"; "delivered" also marks read; the answer is {SUCCESS: true, DATA: []}.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-send-status-delivery.html"""
    await env.send(entry("15550001", "15550001", "wamid.1", "Hello"))
    out = await env.sim.operator_writes(env.portal, env.line, "15550001", "Hi!")
    assert (out["status"], out["answer"], out["sent"]) == (None, None, [])  # no handler bound
    chat = env.portal.chat_by_id(out["chat_id"])
    assert chat is not None
    message = chat.message(out["message_id"])
    assert message is not None and (message.kind, message.delivered, message.read) == ("operator", False, False)

    good = {
        "im": {"chat_id": out["chat_id"], "message_id": out["message_id"]},
        "message": {"id": ["wamid.out1"], "date": 1767225700},
        "chat": {"id": "15550001"},
    }
    refused = [
        {**good, "message": {"id": "wamid.out1"}},  # not an array
        {"message": good["message"], "chat": good["chat"]},  # no im block
        {**good, "im": {"chat_id": "x", "message_id": out["message_id"]}},
        {**good, "chat": {}},
    ]
    for method in ("imconnector.send.status.delivery", "imconnector.send.status.reading"):
        for item in refused:
            status, body = await env.rest(method, CONNECTOR=CONNECTOR, LINE=env.line, MESSAGES=[item])
            assert (status, body["error"]) == (400, "ERROR_ARGUMENT"), (method, item)
    status, body = await env.rest("imconnector.send.status.delivery", CONNECTOR=CONNECTOR, LINE=env.line)
    assert (status, body["error_description"]) == (400, "Argument 'MESSAGES' is null or empty")
    assert (message.delivered, message.read, env.portal.status_reports) == (False, False, [])

    status, body = await env.rest(
        "imconnector.send.status.delivery", CONNECTOR=CONNECTOR, LINE=env.line, MESSAGES=[good]
    )
    assert (status, body["result"]) == (200, {"SUCCESS": True, "DATA": []})
    assert (message.delivered, message.read, message.delivered_ids, message.read_ids) == (
        True,
        True,
        ["wamid.out1"],
        [],
    )

    # the PHP form of an array (as inside batch) is an array; a scalar there is refused too
    im = f"MESSAGES[0][im][chat_id]={out['chat_id']}&MESSAGES[0][im][message_id]={out['message_id']}"
    base = f"imconnector.send.status.reading?CONNECTOR={CONNECTOR}&LINE={env.line}&{im}&MESSAGES[0][chat][id]=15550001"
    status, body = await env.rest(
        "batch",
        halt=0,
        cmd={
            "ok": f"{base}&MESSAGES[0][message][id][0]=wamid.out1",
            "bad": f"{base}&MESSAGES[0][message][id]=wamid.out1",
        },
    )
    assert body["result"]["result"] == {"ok": {"SUCCESS": True, "DATA": []}}
    assert body["result"]["result_error"]["bad"]["error"] == "ERROR_ARGUMENT"
    assert message.read_ids == ["wamid.out1"]

    # a status naming no operator message is accepted (the module only raises an event) and kept
    status, body = await env.rest(
        "imconnector.send.status.delivery",
        CONNECTOR=CONNECTOR,
        LINE=env.line,
        MESSAGES=[{**good, "im": {"chat_id": out["chat_id"], "message_id": 1}}],
    )
    assert (status, body["result"]["SUCCESS"]) == (200, True)
    assert [(r["status"], r["ids"], r["matched"]) for r in env.portal.status_reports] == [
        ("delivery", ["wamid.out1"], True),
        ("reading", ["wamid.out1"], True),
        ("delivery", ["wamid.out1"], False),
    ]
    view = (await env.http.get(f"{env.sim.base_url}/_sandbox/portals/{env.portal.member_id}/openlines")).json()
    assert [r["matched"] for r in view["statuses"]] == [True, True, False]


async def test_im_message_add_writes_system_messages_into_the_open_lines_chat(env: Env) -> None:
    """chats/messages/im-message-add: DIALOG_ID chat<N>, MESSAGE, SYSTEM Y/N; result is the new
    message id; an unknown chat is CHAT_ID "Error creating message", an empty one MESSAGE_EMPTY.
    https://apidocs.bitrix24.com/api-reference/chats/messages/im-message-add.html"""
    sent = await env.send(entry("15550001", "15550001", "wamid.1", "Hello"))
    chat_id = int(sent["DATA"]["RESULT"][0]["session"]["CHAT_ID"])
    status, body = await env.rest(
        "im.message.add", DIALOG_ID=f"chat{chat_id}", MESSAGE="[b]Delivery failed[/b]", SYSTEM="Y"
    )
    assert status == 200 and isinstance(body["result"], int)
    status, app_body = await env.rest("im.message.add", DIALOG_ID=f"chat{chat_id}", MESSAGE="note", SYSTEM="N")
    assert status == 200 and app_body["result"] != body["result"]
    chat = env.portal.chat_by_id(chat_id)
    assert chat is not None
    assert [(m.id, m.kind, m.text, m.author_id) for m in chat.messages[1:]] == [
        (body["result"], "system", "[b]Delivery failed[/b]", 1),
        (app_body["result"], "app", "note", 1),
    ]
    assert [m.id for m in chat.of_kind("system")] == [body["result"]]

    assert await env.rest("im.message.add", DIALOG_ID=f"chat{chat_id + 99}", MESSAGE="x") == (
        400,
        {"error": "CHAT_ID", "error_description": "Error creating message"},
    )
    assert await env.rest("im.message.add", DIALOG_ID=f"chat{chat_id}", MESSAGE="  ") == (
        400,
        {"error": "MESSAGE_EMPTY", "error_description": "Message can't be empty"},
    )
    status, body = await env.rest("im.message.add", DIALOG_ID="", MESSAGE="x")
    assert (status, body["error"]) == (400, "USER_ID_EMPTY")
    view = (await env.http.get(f"{env.sim.base_url}/_sandbox/portals/{env.portal.member_id}/openlines")).json()
    assert [(m["chat_id"], m["kind"], m["text"]) for m in view["system_messages"]] == [
        (chat_id, "system", "[b]Delivery failed[/b]"),
        (chat_id, "app", "note"),
    ]


async def test_operator_writes_posts_the_php_form_with_a_downloadable_file(env: Env, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """imopenlines/imconnector/events/on-im-connector-message-add: form-encoded, PHP-style keys,
    `[b]Name:[/b] [br]` signature, im ids recorded before the post; files as real payloads carry
    them (../shared/reference/bitrix24-rest.md §2), served by the portal.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/events/on-im-connector-message-add.html"""
    got = await receiver(aiohttp_server, env)
    await bind(env, "ONIMCONNECTORMESSAGEADD", got.url)
    await env.send(entry("15550001", "15550001", "wamid.1", "Hello"))
    invoice = b"%PDF-1.4 a tiny invoice"
    out = await env.sim.operator_writes(
        env.portal,
        env.line,
        "15550001",
        "Your order is [i]ready[/i]",
        files=[("invoice.pdf", invoice, "application/pdf"), ("photo.jpg", b"\xff\xd8jpeg", "image/jpeg")],
        user_id=2,
    )
    assert (out["status"], out["answer"]) == (200, {"handled": 1})
    assert out["sent"] == [{"handler": got.url, "status": 200, "answer": {"handled": 1}}]
    (form,) = got.forms
    assert got.content_types == ["application/x-www-form-urlencoded"]
    assert out["message_id"] in got.seen_in_chat[0]  # recorded before the event left

    prefix = "data[MESSAGES][0]"
    assert {k: v for k, v in form.items() if not k.startswith((f"{prefix}[message][files]", "auth[", "ts"))} == {
        "event": "ONIMCONNECTORMESSAGEADD",
        "event_handler_id": form["event_handler_id"],
        "data[CONNECTOR]": CONNECTOR,
        "data[LINE]": str(env.line),
        f"{prefix}[im][chat_id]": str(out["chat_id"]),
        f"{prefix}[im][message_id]": str(out["message_id"]),
        f"{prefix}[message][user_id]": "2",
        f"{prefix}[message][text]": "[b]Boris Agent:[/b] [br]Your order is [i]ready[/i]",
        f"{prefix}[chat][id]": "15550001",
    }
    assert form["auth[application_token]"] == "app-token-openlines"
    assert (form["auth[member_id]"], form["auth[user_id]"]) == (env.portal.member_id, "2")
    assert form["auth[access_token]"] and form["ts"].isdigit()
    files = f"{prefix}[message][files]"
    assert {k.removeprefix(f"{files}[0]") for k in form if k.startswith(f"{files}[0]")} == {
        "[name]",
        "[link]",
        "[downloadLink]",
        "[type]",
        "[mime]",
        "[size]",
        "[sizef]",
    }
    assert (form[f"{files}[0][name]"], form[f"{files}[0][type]"], form[f"{files}[0][mime]"]) == (
        "invoice.pdf",
        "file",
        "application/pdf",
    )
    assert form[f"{files}[0][size]"] == str(len(invoice))
    assert (form[f"{files}[1][name]"], form[f"{files}[1][type]"]) == ("photo.jpg", "image")
    assert form[f"{files}[0][link]"].startswith(f"{env.sim.base_url}/_sandbox/disk/")

    for key in ("link", "downloadLink"):
        resp = await env.http.get(form[f"{files}[0][{key}]"])
        assert (resp.status_code, resp.content, resp.headers["content-type"]) == (200, invoice, "application/pdf")
    assert (await env.http.get(f"{env.sim.base_url}/_sandbox/disk/unknown")).status_code == 404

    chat = env.portal.chat_by_id(out["chat_id"])
    assert chat is not None
    message = chat.message(out["message_id"])
    assert message is not None and message.kind == "operator" and message.author_id == 2
    assert [d.name for d in message.disk_files] == ["invoice.pdf", "photo.jpg"]

    plain = await env.sim.operator_writes(env.portal, env.line, "15550001", "no signature", signature=False)
    assert got.forms[1][f"{prefix}[message][text]"] == "no signature"
    assert got.forms[1][f"{prefix}[message][user_id]"] == "1" and plain["message_id"] != out["message_id"]
    assert not any(k.startswith(files) for k in got.forms[1])
    with pytest.raises(ValueError):
        await env.sim.operator_writes(env.portal, env.line, "nobody", "x")


async def test_operator_edits_and_deletes_post_the_documented_events(env: Env, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """imopenlines/imconnector/events/on-im-connector-message-update (message.id an array) and
    -delete (message.id a string), naming the external id the app confirmed by delivery status.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/events/on-im-connector-message-update.html,
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/events/on-im-connector-message-delete.html"""
    got = await receiver(aiohttp_server, env)
    for event in ("ONIMCONNECTORMESSAGEUPDATE", "ONIMCONNECTORMESSAGEDELETE"):
        await bind(env, event, got.url)
    await env.send(entry("15550001", "15550001", "wamid.1", "Hello"))
    out = await env.sim.operator_writes(env.portal, env.line, "15550001", "Tpyo")
    ack = {
        "im": {"chat_id": out["chat_id"], "message_id": out["message_id"]},
        "message": {"id": ["wamid.out7"]},
        "chat": {"id": "15550001"},
    }
    await env.rest("imconnector.send.status.delivery", CONNECTOR=CONNECTOR, LINE=env.line, MESSAGES=[ack])

    edited = await env.sim.operator_edits(env.portal, env.line, "15550001", out["message_id"], "Typo")
    deleted = await env.sim.operator_deletes(env.portal, env.line, "15550001", out["message_id"])
    assert (edited["status"], deleted["status"]) == (200, 200)
    update, delete = got.forms
    prefix = "data[MESSAGES][0]"
    assert {k: v for k, v in update.items() if k.startswith("data[")} == {
        "data[CONNECTOR]": CONNECTOR,
        "data[LINE]": str(env.line),
        f"{prefix}[im][chat_id]": str(out["chat_id"]),
        f"{prefix}[im][message_id]": str(out["message_id"]),
        f"{prefix}[message][id][0]": "wamid.out7",
        f"{prefix}[message][text]": "[b]Anna Admin:[/b] [br]Typo",
        f"{prefix}[chat][id]": "15550001",
    }
    assert update["event"] == "ONIMCONNECTORMESSAGEUPDATE" and delete["event"] == "ONIMCONNECTORMESSAGEDELETE"
    assert {k: v for k, v in delete.items() if k.startswith("data[")} == {
        "data[CONNECTOR]": CONNECTOR,
        "data[LINE]": str(env.line),
        f"{prefix}[im][chat_id]": str(out["chat_id"]),
        f"{prefix}[im][message_id]": str(out["message_id"]),
        f"{prefix}[message][id]": "wamid.out7",
        f"{prefix}[chat][id]": "15550001",
    }
    chat = env.portal.chat_by_id(out["chat_id"])
    assert chat is not None
    message = chat.message(out["message_id"])
    assert message is not None
    assert (message.text, message.edits, message.deleted) == (
        "[b]Anna Admin:[/b] [br]Typo",
        ["[b]Anna Admin:[/b] [br]Tpyo"],
        True,
    )


async def test_the_external_side_updates_and_deletes_what_it_sent(env: Env) -> None:
    """imopenlines/imconnector/imconnector-update-messages and -delete-messages: by the same
    message.id and chat.id; DATA.RESULT[] per item.
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-update-messages.html,
    https://apidocs.bitrix24.com/api-reference/imopenlines/imconnector/imconnector-delete-messages.html"""
    sent = await env.send(entry("15550001", "15550001", "wamid.1", "Helo"))
    status, body = await env.rest(
        "imconnector.update.messages",
        CONNECTOR=CONNECTOR,
        LINE=env.line,
        MESSAGES=[entry("15550001", "15550001", "wamid.1", "Hello"), entry("15550001", "15550001", "wamid.404", "?")],
    )
    assert status == 200 and body["result"]["SUCCESS"] is False
    ok, missing = body["result"]["DATA"]["RESULT"]
    assert (ok["SUCCESS"], ok["user"], missing["SUCCESS"]) == (True, sent["DATA"]["RESULT"][0]["user"], False)
    assert missing["ERRORS"]
    chat = env.portal.chat(CONNECTOR, env.line, "15550001")
    assert chat is not None
    (message,) = chat.messages
    assert (message.text, message.edits) == ("Hello", ["Helo"])

    status, body = await env.rest(
        "imconnector.delete.messages",
        CONNECTOR=CONNECTOR,
        LINE=env.line,
        MESSAGES=[{"user": {"id": "15550001"}, "message": {"id": "wamid.1"}, "chat": {"id": "15550001"}}],
    )
    assert (status, body["result"]["SUCCESS"], body["result"]["DATA"]["RESULT"][0]["SUCCESS"]) == (200, True, True)
    assert message.deleted is True
    status, body = await env.rest(
        "imconnector.delete.messages", CONNECTOR=CONNECTOR, LINE=env.line + 50, MESSAGES=[entry("1", "1", "m")]
    )
    assert (status, body["error"]) == (400, "NOT_ACTIVE_LINE")
