"""`GET /_sandbox/page`: the simulated Meta as a person looks at it (docs/demo.md): each
number's Calling + SIP state and the messages it sent (what the customers got on WhatsApp),
with the statuses Meta posted back.

Read-only plain HTML, every value escaped, no external assets; refreshes itself every 5 s so a
demo can be watched. The JSON behind it is `/_sandbox/state` and `/_sandbox/phones/<pnid>`.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from aiohttp import web

from thoth_pbx.sandbox.meta.state import SimPhone

if TYPE_CHECKING:
    from thoth_pbx.sandbox.meta.server import MetaSimulator

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}.muted{color:#777}.failed{background:#fde8e8}pre{margin:0;white-space:pre-wrap;font:inherit}
"""


def content(message: dict[str, Any]) -> str:
    """What the customer sees of one sent message, as text."""
    kind = str(message.get("type") or "text")
    body = message.get(kind)
    if kind == "text" and isinstance(body, dict):
        return str(body.get("body", ""))
    if kind == "template":
        rendered = message.get("rendered")
        name = body.get("name") if isinstance(body, dict) else "?"
        return f"[template {name}] {rendered}" if rendered else f"[template {name}]"
    if isinstance(body, dict):
        label = body.get("filename") or body.get("id") or body.get("link") or ""
        caption = f" {body['caption']}" if body.get("caption") else ""
        return f"[{kind} {label}]{caption}"
    return json.dumps(body, ensure_ascii=False)[:300]


def _phone(sim: MetaSimulator, phone: SimPhone) -> str:
    statuses: dict[str, list[str]] = {}
    for entry in sim.webhook_log:
        if entry.get("http_status") == 200:
            statuses.setdefault(str(entry.get("wamid")), []).append(str(entry.get("status")))
    rows = []
    for n, message in enumerate(reversed(phone.sent)):
        wamid = str(message.get("id", ""))
        reply = (message.get("context") or {}).get("message_id") if isinstance(message.get("context"), dict) else None
        outside = wamid in phone.window_closed
        cells = [
            str(len(phone.sent) - n),
            str(message.get("to") or message.get("recipient") or ""),
            str(message.get("type") or "text"),
            content(message) + (f"\n(reply to {reply})" if reply else ""),
            ", ".join(statuses.get(wamid, [])) + (" (outside the 24-hour window)" if outside else ""),
            wamid,
        ]
        css = " class='failed'" if outside else ""
        rows.append(f"<tr{css}>" + "".join(f"<td><pre>{escape(c)}</pre></td>" for c in cells) + "</tr>")
    calls = ", ".join(f"{wacid}: {state}" for wacid, state in phone.calls.items()) or "none"
    sent = (
        "<table><tr><th>#</th><th>to</th><th>type</th><th>content</th><th>statuses posted</th><th>wamid</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p class='muted'>Nothing sent yet.</p>"
    )
    return (
        f"<h2>{escape(phone.display_phone_number)} <span class='muted'>({escape(phone.verified_name)}, "
        f"phone_number_id {escape(phone.phone_number_id)}, WABA {escape(phone.waba_id)})</span></h2>"
        f"<p>Calling: {escape(str(phone.calling.get('status')))}, SIP: {escape(phone.sip_status)}; "
        f"messages received from customers: {len(phone.received)}, read marks sent: {len(phone.read)}; "
        f"call webhooks announced: {escape(calls)} (none by default with SIP: the call goes to the PBX)</p>"
        f"<h3>Sent by the business ({len(phone.sent)}), newest first</h3>" + sent
    )


def render(sim: MetaSimulator) -> str:
    phones = "".join(_phone(sim, p) for p in sim.phones.values()) or "<p>No phone.</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'><title>Meta simulator</title>"
        f"<style>{STYLE}</style></head><body><h1>Meta (WhatsApp Cloud API) simulator</h1>"
        "<p class='muted'>Read-only; refreshes every 5 s. JSON: /_sandbox/state, /_sandbox/phones/&lt;pnid&gt;</p>"
        + phones
        + "</body></html>"
    )


def routes(sim: MetaSimulator) -> list[web.RouteDef]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=render(sim), content_type="text/html", charset="utf-8")

    return [web.get("/_sandbox/page", page)]
