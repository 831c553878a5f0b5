"""`GET /_sandbox/page`: the simulated portal as a person looks at it (docs/demo.md): each
portal's Open Lines chats with their messages and the telephony call log with recordings.

Read-only plain HTML, every value escaped, no external assets; refreshes itself every 5 s so a
demo can be watched. The JSON behind it is `/_sandbox/state` and `/_sandbox/portals/<id>/openlines`.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import TYPE_CHECKING, Any

from aiohttp import web

from thoth_pbx.sandbox.bitrix.state import ChatMessage, OpenLinesChat, Portal

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}.incoming{background:#eef7ee}.operator{background:#eef3fb}
.system{background:#fff6e0;font-style:italic}.muted{color:#777}pre{margin:0;white-space:pre-wrap;font:inherit}
"""

KIND_LABEL = {"incoming": "customer", "operator": "operator", "system": "system", "app": "app"}


def _time(ts: float | int | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _author(portal: Portal, chat: OpenLinesChat, message: ChatMessage) -> str:
    if message.kind == "incoming":
        return message.external_user or "customer"
    user = portal.users.get(message.author_id)
    return f"{user.name} {user.last_name}".strip() if user else f"user {message.author_id}"


def _files(message: ChatMessage) -> str:
    parts = []
    for f in message.files:
        state = "fetched" if f.ok else (f.error or "not fetched yet")
        size = f", {f.size} bytes" if f.size is not None else ""
        parts.append(f"{escape(f.name)} ({escape(f.mime or '?')}{size}, {escape(state)})")
    parts += [f"{escape(f.name)} (operator's file)" for f in message.disk_files]
    return "<br>".join(parts)


def _chat(portal: Portal, chat: OpenLinesChat) -> str:
    line = portal.open_lines.get(chat.line, {}).get("LINE_NAME", f"line {chat.line}")
    rows = []
    for m in chat.messages:
        state = "read" if m.read else ("delivered" if m.delivered else "")
        rows.append(
            f'<tr class="{escape(m.kind)}"><td>{escape(_time(m.date))}</td>'
            f"<td>{escape(KIND_LABEL.get(m.kind, m.kind))}</td><td>{escape(_author(portal, chat, m))}</td>"
            f"<td><pre>{escape(m.shown)}</pre></td><td>{_files(m)}</td><td>{escape(state)}</td></tr>"
        )
    title = escape(chat.name or chat.external_id)
    return (
        f"<h3>{title} <span class='muted'>(chat {chat.chat_id}, {escape(str(line))}, "
        f"customer {escape(chat.external_id)})</span></h3>"
        "<table><tr><th>time</th><th>who</th><th>author</th><th>message</th><th>files</th><th>status</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _call_log(portal: Portal) -> str:
    if not portal.statistics:
        return "<p class='muted'>No finished calls yet.</p>"
    rows = []
    for call_id, row in sorted(portal.statistics.items(), key=lambda item: int(item[1]["ID"]), reverse=True):
        user = portal.users.get(int(row["PORTAL_USER_ID"] or 0))
        record = portal.records.get(call_id)
        recording = ""
        if record:
            size = f", {record['size']} bytes" if record.get("size") is not None else ""
            recording = f"{record['FILENAME']}{size}"
        cells: list[Any] = [
            row["CALL_START_DATE"],
            row["PHONE_NUMBER"],
            row["PORTAL_NUMBER"],
            "incoming" if str(row["INCOMING"]) == "2" else "outgoing",
            f"{user.name} {user.last_name}".strip() if user else row["PORTAL_USER_ID"],
            f"{row['CALL_DURATION']} s",
            row["CALL_FAILED_CODE"],
            recording,
            call_id,
        ]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c if c is not None else ''))}</td>" for c in cells) + "</tr>")
    return (
        "<table><tr><th>start</th><th>customer</th><th>line</th><th>type</th><th>operator</th><th>duration</th>"
        "<th>status</th><th>recording</th><th>CALL_ID</th></tr>" + "".join(rows) + "</table>"
    )


def render(sim: BitrixSimulator) -> str:
    body = []
    for portal in sim.portals.values():
        users = ", ".join(
            f"{u.name} {u.last_name} (ext. {u.extension or '-'})".strip() for u in portal.users.values() if u.active
        )
        active = len(portal.active_calls)
        chats = sorted(portal.chats.values(), key=lambda c: c.chat_id, reverse=True)
        body.append(
            f"<h2>Portal {escape(portal.domain)} <span class='muted'>member_id {escape(portal.member_id)}, "
            f"app {'installed' if portal.installed else 'not installed'}</span></h2>"
            f"<p>Users: {escape(users)}</p>"
            f"<h2>Open Lines chats ({len(chats)})</h2>"
            + ("".join(_chat(portal, c) for c in chats) or "<p class='muted'>No chats yet.</p>")
            + f"<h2>Call log (telephony) <span class='muted'>{active} call(s) in progress</span></h2>"
            + _call_log(portal)
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>Bitrix24 simulator</title>"
        f"<style>{STYLE}</style></head><body><h1>Bitrix24 simulator</h1>"
        "<p class='muted'>Read-only; refreshes every 5 s. JSON: /_sandbox/state, "
        "/_sandbox/portals/&lt;member_id&gt;/openlines</p>" + ("".join(body) or "<p>No portal.</p>") + "</body></html>"
    )


def routes(sim: BitrixSimulator) -> list[web.RouteDef]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=render(sim), content_type="text/html", charset="utf-8")

    return [web.get("/_sandbox/page", page)]
