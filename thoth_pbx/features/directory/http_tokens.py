"""`POST /api/admin/wabas/{id}/check-token`: debug_token now, store and show the verdict."""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.core.http import object_id
from thoth_pbx.features.directory.service import WABAS, Directory
from thoth_pbx.features.directory.whatsapp import MetaService


def token_routes(meta: MetaService, directory: Directory) -> list[web.RouteDef]:
    async def check_token(request: web.Request) -> web.Response:
        account_id = object_id(request)
        verdict = await meta.tokens.check(account_id)
        return web.json_response({"token": verdict, "waba": await directory.get(WABAS, account_id, reveal=False)})

    return [web.post("/api/admin/wabas/{id}/check-token", check_token)]
