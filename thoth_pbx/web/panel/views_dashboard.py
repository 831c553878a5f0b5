"""The dashboard: what /healthz computes (database, AMI, ARI), every portal and Meta token, and
what needs the admin, each with a link to the page where it is fixed."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.service import INSTANCES, PHONES, WABAS
from thoth_pbx.outbox.admin import list_jobs
from thoth_pbx.store.health import database_health
from thoth_pbx.web.health import server_health
from thoth_pbx.web.panel.auth import PANEL
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import Pages, Translate

log = logging.getLogger(__name__)


def token_state(waba: dict[str, Any]) -> str:
    """valid | expiring | invalid | unchecked, from what the token check stored."""
    info = waba.get("token_info") or {}
    if info.get("is_valid") is False:
        return "invalid"
    if waba.get("token_warning"):
        return "expiring"
    if info.get("is_valid") is True:
        return "valid"
    return "unchecked"


async def attention(deps: PanelDeps, phones: list[dict[str, Any]], _: Translate) -> list[dict[str, str]]:
    """Things the admin should act on: (text, link)."""
    items: list[dict[str, str]] = []
    try:
        trunk = await deps.pbx.status()
    except FieldError as exc:
        trunk = {"render_error": {"field": exc.field, "message": exc.message}}
    if trunk.get("render_error"):
        items.append(
            {
                "text": _("The trunk cannot be rendered: {message}").format(message=trunk["render_error"]["message"]),
                "href": f"{PANEL}/trunk",
            }
        )
    # files that differ from the settings matter once the trunk is in use (a phone with SIP, or
    # an earlier apply); a messaging-only install is not nagged about a trunk it never wanted
    in_use = trunk.get("last_revision") or any(p["sip_enabled"] for p in phones)
    if (trunk.get("apply_needed") and in_use) or any(p["trunk_needs_apply"] for p in phones):
        items.append(
            {
                "text": _("The trunk needs an apply: the files on disk are not what the settings render."),
                "href": f"{PANEL}/trunk",
            }
        )
    if trunk.get("drift"):
        items.append(
            {"text": _("Someone changed our files on disk since the last apply (drift)."), "href": f"{PANEL}/trunk"}
        )
    for phone in phones:
        if phone["last_error"]:
            items.append(
                {
                    "text": _("Phone {number} has an error from Meta.").format(number=phone["number"]),
                    "href": f"{PANEL}/phones/{phone['id']}",
                }
            )
        if phone["app_instance_id"] is not None:
            view = await deps.messaging.view(phone["id"])
            if view["connector"] != "green":
                items.append(
                    {
                        "text": _("The Open Line of {number} is {state}: {reason}").format(
                            number=phone["number"], state=view["connector"], reason=view["reason"] or "-"
                        ),
                        "href": f"{PANEL}/phones/{phone['id']}",
                    }
                )
    failed = (await list_jobs(deps.sessions, status="failed", limit=1))["counts"]["failed"]
    if failed:
        items.append(
            {"text": _("{count} outbox job(s) failed.").format(count=failed), "href": f"{PANEL}/outbox?status=failed"}
        )
    return items


def dashboard_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    async def dashboard(request: web.Request) -> web.Response:
        _ = pages.translator(request)
        wabas = await deps.directory.list(WABAS)
        phones = await deps.directory.list(PHONES)
        portals = await deps.directory.list(INSTANCES)
        context = {
            "nav": "dashboard",
            "database": await database_health(deps.engine, deps.box),
            "ami": deps.ami.status.as_json(),
            "ari": deps.ari.status.as_json(),
            "stasis": deps.stasis() if deps.stasis is not None else None,
            "servers": [server_health(server)[0] for server in deps.asterisks] if len(deps.asterisks) > 1 else [],
            "portals": portals,
            "wabas": [{**w, "token_state": token_state(w)} for w in wabas],
            "attention": await attention(deps, phones, _),
            "counts": {"wabas": len(wabas), "phones": len(phones), "portals": len(portals)},
        }
        return pages.render(request, "dashboard.html", context)

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(PANEL + "/")

    return [web.get(PANEL + "/", dashboard), web.get(PANEL, root), web.get("/", root)]
