"""`POST /api/bitrix/install` (ONAPPINSTALL) and `POST /api/bitrix/events` (every bound event):
called by Bitrix24's servers with PHP-style forms, so no Basic auth; anyone can post here, so
the cheap checks come first and every step is bounded (docs/security.md)."""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.clients.bitrix.forms import MAX_FORM, read_form
from thoth_pbx.features.portal.install import EVENTS_PATH, INSTALL_PATH, BitrixApp

__all__ = ["MAX_FORM", "bitrix_webhook_routes"]


def bitrix_webhook_routes(app: BitrixApp) -> list[web.RouteDef]:
    async def install(request: web.Request) -> web.Response:
        return web.json_response(await app.install(await read_form(request)))

    async def events(request: web.Request) -> web.Response:
        return web.json_response(await app.receive(await read_form(request, needs_token=True)))

    return [web.post(INSTALL_PATH, install), web.post(EVENTS_PATH, events)]
