"""`GET /healthz` (no auth): the database (a write and the key, store/health.py), AMI and ARI."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx import __version__
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.store.health import database_health


def health_routes(engine: AsyncEngine, box: SecretBox, ami: AmiClient, ari: AriClient) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        database = await database_health(engine, box)
        body: dict[str, Any] = {
            "version": __version__,
            "database": database,
            "ami": ami.status.as_json(),
            "ari": ari.status.as_json(),
        }
        ok = database["state"] == "ok"
        ready = ok and all(body[k]["state"] in ("connected", "disabled") for k in ("ami", "ari"))
        body["status"] = "ok" if ready else ("degraded" if ok else "down")
        return web.json_response(body, status=200 if ok else 503)

    return [web.get("/healthz", healthz)]
