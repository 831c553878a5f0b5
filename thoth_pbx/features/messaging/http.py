"""Routes of the messaging feature.

- `GET /api/admin/phones/{id}/connector`: the number's Open Line and connector state
  (green | yellow | red | pending | unlinked, with the reason).
- `POST /api/admin/phones/{id}/connector/repair`: set the line up again now (202, job id).
- `GET /api/admin/phones/{id}/chats`: the number's chats (customer, message count, failures).
- `GET /api/admin/phones/{id}/chats/{customer}?limit=50`: a chat's last messages with their
  direction, status and error, oldest first.
- `GET /api/admin/wabas/{id}/templates`: the account's synchronised templates (name, language,
  status, what values each needs, an example command) and when they were last synchronised.
- `POST /api/admin/wabas/{id}/templates/sync`: list them at Meta now; the count, or Meta's error.
- `POST /api/bitrix/sms`: the SMS provider's HANDLER (Bitrix24's servers post each CRM SMS
  here; no Basic auth, the portal's application token is the credential).
- `GET /api/media/{file}/{name}?expires=&sig=`: a customer's file for Bitrix24 to fetch
  (signed, expiring link; no Basic auth, the signature is the credential).
- `GET|POST /api/bitrix/connector`: the connector's PLACEMENT_HANDLER (Contact Center settings
  open it in a frame; Bitrix24's servers and browsers call it, so no Basic auth): a plain page
  saying where the line is managed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from thoth_pbx.clients.bitrix.forms import read_form
from thoth_pbx.core.http import object_id
from thoth_pbx.features.messaging.chats import Chats
from thoth_pbx.features.messaging.connector import PLACEMENT_PATH
from thoth_pbx.features.messaging.media import MediaStore
from thoth_pbx.features.messaging.sms import HANDLER_PATH

if TYPE_CHECKING:
    from thoth_pbx.features.messaging.wire import Messaging

PLACEMENT_PAGE = """<!doctype html><meta charset="utf-8"><title>WhatsApp (thoth-pbx)</title>
<p>This WhatsApp line is connected and managed by thoth-pbx: each WhatsApp number linked to this
portal in thoth-pbx has its own Open Line, <b>THOTH_&lt;number&gt;</b>. Change numbers and links in
the thoth-pbx admin panel.</p>"""


def messaging_routes(messaging: Messaging, chats: Chats, media: MediaStore) -> list[web.RouteDef]:
    lines = messaging.lines

    async def template_list(request: web.Request) -> web.Response:
        return web.json_response(await messaging.templates.listing(object_id(request)))

    async def template_sync(request: web.Request) -> web.Response:
        return web.json_response(await messaging.templates.sync(object_id(request)))

    async def sms(request: web.Request) -> web.Response:
        return web.json_response(await messaging.sms.receive(await read_form(request, needs_token=True)))

    async def view(request: web.Request) -> web.Response:
        return web.json_response(await lines.view(object_id(request)))

    async def repair(request: web.Request) -> web.Response:
        return web.json_response({"queued": await lines.repair(object_id(request))}, status=202)

    async def chat_list(request: web.Request) -> web.Response:
        return web.json_response(await chats.list(object_id(request)))

    async def chat_messages(request: web.Request) -> web.Response:
        found = await chats.messages(object_id(request), request.match_info["customer"], request.query.get("limit"))
        return web.json_response(found)

    async def media_file(request: web.Request) -> web.StreamResponse:
        opened = media.open(request.match_info["file"], request.query.get("expires", ""), request.query.get("sig", ""))
        if opened is None:
            raise web.HTTPNotFound(text="this link is unknown or expired")
        path, mime_type = opened
        return web.FileResponse(path, headers={"Content-Type": mime_type, "Cache-Control": "private, no-store"})

    async def placement(request: web.Request) -> web.Response:
        return web.Response(text=PLACEMENT_PAGE, content_type="text/html")

    return [
        web.get("/api/admin/phones/{id}/connector", view),
        web.post("/api/admin/phones/{id}/connector/repair", repair),
        web.get("/api/admin/phones/{id}/chats", chat_list),
        web.get("/api/admin/phones/{id}/chats/{customer}", chat_messages),
        web.get("/api/admin/wabas/{id}/templates", template_list),
        web.post("/api/admin/wabas/{id}/templates/sync", template_sync),
        web.post(HANDLER_PATH, sms),
        web.get("/api/media/{file}/{name}", media_file),
        web.get(PLACEMENT_PATH, placement),
        web.post(PLACEMENT_PATH, placement),
    ]
