"""The WhatsApp trunk on Asterisk: settings with where each value comes from, a preview of the
files as a diff against the disk, apply with its verified result or the rollback reason,
revisions, drift, restart when convenient."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aiohttp import web

from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk import files as trunk_files
from thoth_pbx.features.trunk import render as trunk
from thoth_pbx.features.trunk.http import pick_server
from thoth_pbx.features.trunk.service import PbxService
from thoth_pbx.web.panel import forms
from thoth_pbx.web.panel.auth import PANEL, SESSION
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import N_, Pages

FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(trunk.TrunkSettings)}
KEYS = tuple(trunk.VALIDATORS)
# headings of the settings table, at the first key of each group (VALIDATORS keeps this order)
GROUPS = {
    "transport_name": N_("Names and the TLS transport"),
    "qualify_frequency": N_("Meta's address (AOR)"),
    "context": N_("The endpoint (calls from Meta)"),
    "identify_match": N_("Who is Meta (identify)"),
    "fallback_dial": N_("Dialplan: while thoth-pbx is not connected"),
}


def kind(key: str) -> str:
    """bool | list | text: how the form shows a setting."""
    declared = FIELD_TYPES[key]
    if declared.startswith("bool"):
        return "bool"
    if declared.startswith("tuple"):
        return "list"
    return "text"


def shown(value: Any, key: str) -> str:
    """A setting as the form shows it (and compares it, to send only what the admin changed)."""
    if value is None:
        return ""
    if kind(key) == "bool":
        return "yes" if value else "no"
    if kind(key) == "list":
        return ", ".join(str(item) for item in value)
    return str(value)


def typed(text: str, key: str) -> Any:
    """What the admin typed as the API takes it (strings are validated by the API's own rules)."""
    if kind(key) == "bool":
        return {"yes": True, "no": False}.get(text)
    if text == "":
        return None if trunk.omittable(key) or kind(key) != "list" else []
    return text


def trunk_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    base = f"{PANEL}/trunk"
    actor = f"panel:{deps.settings.admin_user}"
    servers = deps.pbx_servers or {deps.pbx.server.name: deps.pbx}

    def pbx_of(request: web.Request) -> tuple[PbxService, dict[str, Any]]:
        """The trunk of the server the page is about (`?asterisk=`, default the first), and what
        every trunk page needs to stay on it (links and forms keep the query)."""
        pbx = pick_server(servers, request.query.get("asterisk"))
        first = pbx is next(iter(servers.values()))
        query = "" if first else f"?asterisk={pbx.server.name}"
        return pbx, {"nav": "trunk", "trunk_q": query, "servers": list(servers), "server": pbx.server.name}

    async def page(
        request: web.Request, values: dict[str, str] | None = None, exc: FieldError | None = None, **extra: Any
    ) -> web.Response:
        pbx, where = pbx_of(request)
        view = await pbx.trunk_view()
        _ = pages.translator(request)
        errors, form_error = forms.errors_of(exc.field, exc.message, KEYS) if exc else ({}, None)
        rows = [
            {
                "key": key,
                "kind": kind(key),
                "value": (values or {}).get(key, shown(view["settings"][key], key)),
                "source": view["source"][key],
                "default": shown(view["defaults"][key], key),
                "omittable": key in view["omittable"],
                "group": _(GROUPS[key]) if key in GROUPS else None,
            }
            for key in KEYS
        ]
        status = await pbx.status()
        context = {**where, "rows": rows, "status": status, "errors": errors, "form_error": form_error, **extra}
        return pages.render(request, "trunk.html", context, status=exc.status if exc and exc.status < 500 else 200)

    async def show(request: web.Request) -> web.Response:
        return await page(request)

    async def update(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        pbx, where = pbx_of(request)
        current = (await pbx.trunk_view())["settings"]
        values = {key: forms.text(form, key) for key in KEYS if key in form}
        changed = {key: typed(text, key) for key, text in values.items() if text != shown(current[key], key)}
        _ = pages.translator(request)
        if not changed:
            request[SESSION].flash(_("Nothing changed."))
            raise web.HTTPSeeOther(base + where["trunk_q"])
        try:
            await pbx.update_trunk(changed, actor)
        except FieldError as exc:
            return await page(request, values, exc)
        request[SESSION].flash(_("Saved. Preview the files, then apply them to Asterisk."))
        raise web.HTTPSeeOther(f"{base}/preview{where['trunk_q']}")

    async def preview(request: web.Request) -> web.Response:
        pbx, where = pbx_of(request)
        try:
            rendered = await pbx.render()
        except FieldError as exc:
            return await page(request, None, exc)
        diff = trunk_files.diff(await asyncio.to_thread(pbx.applier.plan, rendered))
        context = {**where, "diff": diff, "warnings": rendered.warnings, "files": rendered.masked()}
        return pages.render(request, "trunk_preview.html", context)

    async def apply(request: web.Request) -> web.Response:
        pbx, where = pbx_of(request)
        try:
            outcome, revision = await pbx.apply(actor)
        except FieldError as exc:
            return await page(request, None, exc)
        context = {**where, "outcome": outcome.as_json(), "ok": outcome.ok, "revision": revision}
        return pages.render(request, "trunk_applied.html", context, status=200 if outcome.ok else 409)

    async def restart(request: web.Request) -> web.StreamResponse:
        pbx, where = pbx_of(request)
        request[SESSION].flash(await pbx.restart_when_convenient())
        raise web.HTTPSeeOther(base + where["trunk_q"])

    async def revisions(request: web.Request) -> web.Response:
        pbx, where = pbx_of(request)
        return pages.render(request, "trunk_revisions.html", {**where, "revisions": await pbx.revisions()})

    return [
        web.get(base, show),
        web.post(base, update),
        web.get(base + "/preview", preview),
        web.post(base + "/apply", apply),
        web.post(base + "/restart", restart),
        web.get(base + "/revisions", revisions),
    ]
