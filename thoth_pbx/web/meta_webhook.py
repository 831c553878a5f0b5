"""`GET/POST /api/waba/?api-key=KEY`: Meta's webhook (no Basic auth; the api-key picks the
account, the app-secret signature proves the sender)."""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.clients.meta.webhook import SIGNATURE_HEADER, WebhookReceiver
from thoth_pbx.core.metrics import WEBHOOK_DELIVERIES
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.whatsapp import WEBHOOK_PATH


def meta_webhook_routes(receiver: WebhookReceiver) -> list[web.RouteDef]:
    async def verify(request: web.Request) -> web.Response:
        challenge = await receiver.handshake(request.query.get("api-key"), request.query)
        return web.Response(text=challenge, content_type="text/plain")

    async def deliver(request: web.Request) -> web.Response:
        try:
            account = await receiver.account(request.query.get("api-key"))
            receiver.check_size(request.content_length)
            body = await request.read()
            receipt = await receiver.receive(account, body, request.headers.get(SIGNATURE_HEADER))
        except FieldError:
            WEBHOOK_DELIVERIES.labels("refused").inc()
            raise
        WEBHOOK_DELIVERIES.labels("stored").inc()
        return web.Response(body=b'{"received": %d}' % receipt.events, content_type="application/json")

    return [web.get(WEBHOOK_PATH, verify), web.post(WEBHOOK_PATH, deliver)]
