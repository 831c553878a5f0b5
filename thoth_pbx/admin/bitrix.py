"""HTTP routes of the Bitrix24 side.

- `POST /api/bitrix/install`: the app's "Initial installation path" (ONAPPINSTALL, form-encoded).
- `POST /api/bitrix/events`: every bound event (form-encoded, application_token checked).
  Both are called by Bitrix's servers, so no Basic auth; they answer fast (work is queued).
- `GET /api/admin/bitrix/instances/{id}/users`: the user <-> extension map.
- `POST /api/admin/bitrix/instances/{id}/sync`: re-bind events, add lines, reload users.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.admin.http import object_id
from thoth_pbx.bitrix import phpquery
from thoth_pbx.bitrix.install import EVENTS_PATH, INSTALL_PATH
from thoth_pbx.bitrix.service import BitrixService
from thoth_pbx.bitrix.users import list_users
from thoth_pbx.store.models import AppInstance
from thoth_pbx.validation import FieldError

MAX_FORM = 1024 * 1024


async def read_form(request: web.Request) -> dict[str, Any]:
    """Bitrix posts PHP-style form fields (`auth[member_id]=...`); parse them into nested dicts."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise FieldError("body", "must be application/x-www-form-urlencoded, as Bitrix24 sends it", 415)
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise FieldError("body", f"is larger than {MAX_FORM} bytes", 413)
    return phpquery.decode(await request.read())


def bitrix_routes(bitrix: BitrixService, sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
    async def install(request: web.Request) -> web.Response:
        return web.json_response(await bitrix.app.install(await read_form(request)))

    async def events(request: web.Request) -> web.Response:
        return web.json_response(await bitrix.app.receive(await read_form(request)))

    async def users(request: web.Request) -> web.Response:
        instance_id = object_id(request)
        async with sessions() as session:
            if await session.get(AppInstance, instance_id) is None:
                raise FieldError("id", f"no app instance with id {instance_id}", 404)
            return web.json_response({"items": await list_users(session, instance_id)})

    async def sync(request: web.Request) -> web.Response:
        jobs = await bitrix.resync(object_id(request))
        return web.json_response({"queued": jobs}, status=202)

    return [
        web.post(INSTALL_PATH, install),
        web.post(EVENTS_PATH, events),
        web.get("/api/admin/bitrix/instances/{id}/users", users),
        web.post("/api/admin/bitrix/instances/{id}/sync", sync),
    ]
