"""HTTP routes of the Meta side.

- `GET/POST /api/waba/?api-key=KEY`: Meta's webhook (no Basic auth; the api-key picks the
  account, the app-secret signature proves the sender).
- `POST /api/admin/phones/{id}/calling` `{"action": "enable|disable|show|reset-password"}`.
- `POST /api/admin/wabas/{id}/check-token`: debug_token now, store and show the verdict.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thoth_pbx.web.http import object_id, read_json
from thoth_pbx.features.directory.service import PHONES, WABAS, Directory
from thoth_pbx.features.trunk.calling import CallingFailed, CallingResult
from thoth_pbx.features.directory.whatsapp import WEBHOOK_PATH, MetaService
from thoth_pbx.clients.meta.webhook import SIGNATURE_HEADER
from thoth_pbx.core.validation import FieldError


def meta_routes(meta: MetaService, directory: Directory) -> list[web.RouteDef]:
    receiver = meta.webhook

    async def verify(request: web.Request) -> web.Response:
        challenge = await receiver.handshake(request.query.get("api-key"), request.query)
        return web.Response(text=challenge, content_type="text/plain")

    async def deliver(request: web.Request) -> web.Response:
        account = await receiver.account(request.query.get("api-key"))
        receiver.check_size(request.content_length)
        body = await request.read()
        receipt = await receiver.receive(account, body, request.headers.get(SIGNATURE_HEADER))
        return web.Response(body=b'{"received": %d}' % receipt.events, content_type="application/json")

    async def calling(request: web.Request) -> web.Response:
        phone_id = object_id(request)
        body = await read_json(request)
        if not isinstance(body, dict) or set(body) - {"action"}:
            raise FieldError("body", 'must be {"action": "enable|disable|show|reset-password"}')
        await directory.get(PHONES, phone_id)  # 404 for an unknown id, before talking to Meta
        try:
            result = await meta.calling.run(phone_id, body.get("action"))
        except CallingFailed as failed:
            error = failed.result.error or {}
            return web.json_response(
                {"error": {"field": "meta", "message": error.get("hint"), "meta": error},
                 "phone": await directory.get(PHONES, phone_id)},
                status=502,
            )
        return web.json_response({"result": _result(result), "phone": await directory.get(PHONES, phone_id)})

    async def check_token(request: web.Request) -> web.Response:
        account_id = object_id(request)
        verdict = await meta.tokens.check(account_id)
        return web.json_response({"token": verdict, "waba": await directory.get(WABAS, account_id, reveal=False)})

    return [
        web.get(WEBHOOK_PATH, verify),
        web.post(WEBHOOK_PATH, deliver),
        web.post("/api/admin/phones/{id}/calling", calling),
        web.post("/api/admin/wabas/{id}/check-token", check_token),
    ]


def _result(result: CallingResult) -> dict[str, Any]:
    return {"action": result.action, "ok": result.ok, "meta_settings": result.state, "problems": result.problems}
