"""`GET /healthz` (no auth): the database (a write and the key, store/health.py), AMI and ARI of
every configured Asterisk, and whether this instance owns each one's Stasis app
(features/calls/leadership.py): a standby's ARI is closed on purpose and does not make it
degraded. `ami`, `ari` and `stasis` at the top are the first server's; `asterisks` lists all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx import __version__
from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.store.health import database_health


@dataclass(frozen=True)
class AsteriskHealth:
    """What /healthz reads of one configured Asterisk."""

    name: str
    ami: AmiClient
    ari: AriClient
    stasis: Callable[[], dict[str, Any]] | None = None  # None: no election (SQLite, no ARI)


def server_health(server: AsteriskHealth) -> tuple[dict[str, Any], bool]:
    """One server's AMI, ARI and Stasis role as /healthz (and the panel's dashboard) show them,
    and whether it is ready (a standby's closed ARI counts as ready)."""
    body: dict[str, Any] = {"name": server.name, "ami": server.ami.status.as_json(), "ari": server.ari.status.as_json()}
    standby = False
    if server.stasis is not None:
        body["stasis"] = server.stasis()
        standby = body["stasis"]["role"] == "standby"
    ready = all(body[k]["state"] in ("connected", "disabled") or (k == "ari" and standby) for k in ("ami", "ari"))
    return body, ready


def health_routes(engine: AsyncEngine, box: SecretBox, asterisks: list[AsteriskHealth]) -> list[web.RouteDef]:
    async def healthz(request: web.Request) -> web.Response:
        database = await database_health(engine, box)
        servers = [server_health(server) for server in asterisks]
        first = servers[0][0]
        body: dict[str, Any] = {
            "version": __version__,
            "database": database,
            **{key: first[key] for key in ("ami", "ari", "stasis") if key in first},
            "asterisks": [server for server, _ready in servers],
        }
        ok = database["state"] == "ok"
        ready = ok and all(ready for _server_body, ready in servers)
        body["status"] = "ok" if ready else ("degraded" if ok else "down")
        return web.json_response(body, status=200 if ok else 503)

    return [web.get("/healthz", healthz)]
