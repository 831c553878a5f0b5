"""`GET /healthz` (no auth): the database (a write and the key, store/health.py), AMI and ARI, and
whether this instance owns the Stasis app (features/calls/leadership.py): a standby's ARI is
closed on purpose and does not make it degraded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx import __version__
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.store.health import database_health


def health_routes(
    engine: AsyncEngine,
    box: SecretBox,
    ami: AmiClient,
    ari: AriClient,
    stasis: Callable[[], dict[str, Any]] | None = None,
) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        database = await database_health(engine, box)
        body: dict[str, Any] = {
            "version": __version__,
            "database": database,
            "ami": ami.status.as_json(),
            "ari": ari.status.as_json(),
        }
        ok = database["state"] == "ok"
        standby = False
        if stasis is not None:
            body["stasis"] = stasis()
            standby = body["stasis"]["role"] == "standby"
        ready = ok and all(
            body[k]["state"] in ("connected", "disabled") or (k == "ari" and standby) for k in ("ami", "ari")
        )
        body["status"] = "ok" if ready else ("degraded" if ok else "down")
        return web.json_response(body, status=200 if ok else 503)

    return [web.get("/healthz", healthz)]
