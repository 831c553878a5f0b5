"""Admin routes of the Bitrix24 portal (the public install/events routes are web/bitrix_webhook.py).

- `GET /api/admin/bitrix/instances/{id}/users`: the user <-> extension map.
- `POST /api/admin/bitrix/instances/{id}/sync`: re-bind events, add lines, reload users.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import AppInstance
from thoth_pbx.features.portal.service import BitrixService
from thoth_pbx.features.portal.users import list_users


def portal_admin_routes(bitrix: BitrixService, sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
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
        web.get("/api/admin/bitrix/instances/{id}/users", users),
        web.post("/api/admin/bitrix/instances/{id}/sync", sync),
    ]
