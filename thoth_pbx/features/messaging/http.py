"""Routes of the messaging feature.

- `GET /api/admin/phones/{id}/connector`: the number's Open Line and connector state
  (green | yellow | red | pending | unlinked, with the reason).
- `POST /api/admin/phones/{id}/connector/repair`: set the line up again now (202, job id).
- `GET|POST /api/bitrix/connector`: the connector's PLACEMENT_HANDLER (Contact Center settings
  open it in a frame; Bitrix24's servers and browsers call it, so no Basic auth): a plain page
  saying where the line is managed.
"""

from __future__ import annotations

from aiohttp import web

from thoth_pbx.core.http import object_id
from thoth_pbx.features.messaging.connector import PLACEMENT_PATH
from thoth_pbx.features.messaging.lines import MessagingLines

PLACEMENT_PAGE = """<!doctype html><meta charset="utf-8"><title>WhatsApp (thoth-pbx)</title>
<p>This WhatsApp line is connected and managed by thoth-pbx: each WhatsApp number linked to this
portal in thoth-pbx has its own Open Line, <b>THOTH_&lt;number&gt;</b>. Change numbers and links in
the thoth-pbx admin panel.</p>"""


def messaging_routes(lines: MessagingLines) -> list[web.RouteDef]:
    async def view(request: web.Request) -> web.Response:
        return web.json_response(await lines.view(object_id(request)))

    async def repair(request: web.Request) -> web.Response:
        return web.json_response({"queued": await lines.repair(object_id(request))}, status=202)

    async def placement(request: web.Request) -> web.Response:
        return web.Response(text=PLACEMENT_PAGE, content_type="text/html")

    return [
        web.get("/api/admin/phones/{id}/connector", view),
        web.post("/api/admin/phones/{id}/connector/repair", repair),
        web.get(PLACEMENT_PATH, placement),
        web.post(PLACEMENT_PATH, placement),
    ]
