"""Admin routes for the WhatsApp trunk on Asterisk (docs/pbx.md).

- `GET /api/admin/pbx/trunk`: effective settings, their source, the defaults.
- `PUT /api/admin/pbx/trunk`: merge the given settings (null = leave the option out);
  400 naming the field for any bad value, nothing stored then.
- `GET /api/admin/pbx/render`: preview of the files (passwords masked), nothing written.
- `POST /api/admin/pbx/apply`: write, reload, verify, roll back; 200 applied/unchanged/
  restart_required, 409 rolled_back, 502 failed (AMI); the body says which object/option.
- `GET /api/admin/pbx/status`: AMI, live objects, reachability, last revision, drift.
- `GET /api/admin/pbx/revisions`: the last applies with their masked diffs.
- Several Asterisk servers (settings `[[asterisk]]`): each route takes `?asterisk=NAME` (default:
  the first server); `GET /api/admin/pbx/servers` lists them with their phones. The trunk
  settings the admin edits are shared; a server's own `trunk` table overrides them.
- `POST /api/admin/phones/{id}/calling` `{"action": "enable|disable|show|reset-password"}`:
  Calling + SIP of the phone on Meta (docs/meta.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from thoth_pbx.core.http import object_id, read_json
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk.calling import CallingFailed, CallingResult, CallingService
from thoth_pbx.features.trunk.service import PbxService

# phone id -> the phone as the admin API shows it (the directory answers; 404 when unknown)
ShowPhone = Callable[[int], Awaitable[dict[str, Any]]]

STATUS_BY_RESULT = {"applied": 200, "unchanged": 200, "restart_required": 200, "rolled_back": 409, "failed": 502}


def pick_server(servers: dict[str, PbxService], name: str | None) -> PbxService:
    """The trunk of the server called `name` (None: the first); 404 naming the choices."""
    if name is None or name == "":
        return next(iter(servers.values()))
    try:
        return servers[name]
    except KeyError:
        raise FieldError(
            "asterisk", f"no Asterisk server named {name!r}; configured: {', '.join(servers)}", 404
        ) from None


def pbx_routes(servers: dict[str, PbxService], admin_user: str) -> list[web.RouteDef]:
    """`servers`: each configured Asterisk's trunk by name, the first server first."""
    actor = f"api:{admin_user}"

    def pbx_of(request: web.Request) -> PbxService:
        return pick_server(servers, request.query.get("asterisk"))

    async def get_trunk(request: web.Request) -> web.Response:
        return web.json_response(await pbx_of(request).trunk_view())

    async def put_trunk(request: web.Request) -> web.Response:
        return web.json_response(await pbx_of(request).update_trunk(await read_json(request), actor))

    async def render(request: web.Request) -> web.Response:
        rendered = await pbx_of(request).render()
        return web.json_response(
            {"files": rendered.masked(), "warnings": list(rendered.warnings), "phones": list(rendered.phone_ids)}
        )

    async def apply(request: web.Request) -> web.Response:
        outcome, revision = await pbx_of(request).apply(actor)
        body = {"revision": revision, **outcome.as_json()}
        return web.json_response(body, status=STATUS_BY_RESULT.get(outcome.result, 500))

    async def status(request: web.Request) -> web.Response:
        return web.json_response(await pbx_of(request).status())

    async def revisions(request: web.Request) -> web.Response:
        return web.json_response({"items": await pbx_of(request).revisions()})

    async def list_servers(request: web.Request) -> web.Response:
        return web.json_response({"items": [await pbx.summary() for pbx in servers.values()]})

    return [
        web.get("/api/admin/pbx/servers", list_servers),
        web.get("/api/admin/pbx/trunk", get_trunk),
        web.put("/api/admin/pbx/trunk", put_trunk),
        web.get("/api/admin/pbx/render", render),
        web.post("/api/admin/pbx/apply", apply),
        web.get("/api/admin/pbx/status", status),
        web.get("/api/admin/pbx/revisions", revisions),
    ]


def calling_routes(calling: CallingService, show_phone: ShowPhone) -> list[web.RouteDef]:
    async def run(request: web.Request) -> web.Response:
        phone_id = object_id(request)
        body = await read_json(request)
        if not isinstance(body, dict) or set(body) - {"action"}:
            raise FieldError("body", 'must be {"action": "enable|disable|show|reset-password"}')
        await show_phone(phone_id)  # 404 for an unknown id, before talking to Meta
        try:
            # not a string: the empty action, refused by run() like any unknown one
            result = await calling.run(phone_id, str(body.get("action") or ""))
        except CallingFailed as failed:
            error = failed.result.error or {}
            return web.json_response(
                {
                    "error": {"field": "meta", "message": error.get("hint"), "meta": error},
                    "phone": await show_phone(phone_id),
                },
                status=502,
            )
        return web.json_response({"result": _result(result), "phone": await show_phone(phone_id)})

    return [web.post("/api/admin/phones/{id}/calling", run)]


def _result(result: CallingResult) -> dict[str, Any]:
    return {"action": result.action, "ok": result.ok, "meta_settings": result.state, "problems": result.problems}
