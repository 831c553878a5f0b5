"""Admin view of the outbox: what is waiting, what failed and why; retry a job.

- `GET /api/admin/outbox?status=pending|running|failed|done&kind=&instance_id=&chain=&limit=`
  (default: everything not done, newest first, with counts per status)
- `POST /api/admin/outbox/{id}/retry`: a failed or backing-off job runs again now.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core import validation as v
from thoth_pbx.core.http import object_id
from thoth_pbx.outbox.admin import list_jobs as list_outbox_jobs
from thoth_pbx.outbox.queue import Outbox


def outbox_routes(outbox: Outbox, sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
    async def list_jobs(request: web.Request) -> web.Response:
        q = request.query
        instance = q.get("instance_id")
        body = await list_outbox_jobs(
            sessions,
            status=q.get("status") or None,
            kind=q.get("kind") or None,
            instance_id=v.integer("instance_id", instance, minimum=1) if instance else None,
            chain=q.get("chain") or None,
            limit=v.integer("limit", q.get("limit", "100"), minimum=1, maximum=1000),
        )
        return web.json_response(body)

    async def retry(request: web.Request) -> web.Response:
        return web.json_response(await outbox.retry(object_id(request)))

    return [
        web.get("/api/admin/outbox", list_jobs),
        web.post("/api/admin/outbox/{id}/retry", retry),
    ]
