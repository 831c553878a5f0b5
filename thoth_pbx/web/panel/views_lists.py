"""Read-mostly pages: calls (filters, detail, recording), chats per line, the outbox (retry),
Bitrix24 portals (the install URL to paste, status, users and extensions)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import or_, select

from thoth_pbx.core import validation as v
from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.calls.http import STATES, describe
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.directory.service import INSTANCES, PHONES
from thoth_pbx.features.messaging.chats import Chats
from thoth_pbx.features.portal.install import INSTALL_PATH
from thoth_pbx.features.portal.users import list_users
from thoth_pbx.outbox.admin import STATUSES, list_jobs
from thoth_pbx.web.panel.auth import PANEL
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import N_, Pages

PAGE_SIZE = 100


def day(field: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FieldError(field, "must be a date like 2026-12-01") from None


def list_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    chats = Chats(deps.sessions)

    # ------------------------------------------------------------------ calls

    async def calls(request: web.Request) -> web.Response:
        q = request.query
        filters = {k: q.get(k, "").strip() for k in ("state", "since", "until", "number")}
        query = select(Call).order_by(Call.id.desc()).limit(PAGE_SIZE)
        errors: dict[str, str] = {}
        try:
            if filters["state"]:
                query = query.where(Call.state == v.choice("state", filters["state"], STATES))
            if filters["since"]:
                start = day("since", filters["since"])
                query = query.where(Call.started_at >= dt.datetime.combine(start, dt.time(), dt.UTC))
            if filters["until"]:
                end = day("until", filters["until"]) + dt.timedelta(days=1)
                query = query.where(Call.started_at < dt.datetime.combine(end, dt.time(), dt.UTC))
        except FieldError as exc:
            errors[exc.field] = exc.message
        if filters["number"]:
            like = f"%{filters['number'].lstrip('+')}%"
            query = query.where(or_(Call.caller.like(like), Call.called.like(like)))
        rows: list[Any] = []
        if not errors:
            async with deps.sessions() as session:
                rows = list((await session.scalars(query)).all())
        context = {
            "nav": "calls",
            "calls": [describe(c) for c in rows],
            "filters": filters,
            "states": STATES,
            "errors": errors,
        }
        return pages.render(request, "calls.html", context, status=400 if errors else 200)

    async def load_call(call_id: int) -> Call:
        async with deps.sessions() as session:
            call = await session.get(Call, call_id)
        if call is None:
            raise FieldError("id", f"no call with id {call_id}", 404)
        return call

    async def call(request: web.Request) -> web.Response:
        found = await load_call(object_id(request))
        recording = found.recording_path is not None and Path(found.recording_path).is_file()
        return pages.render(request, "call.html", {"nav": "calls", "call": describe(found), "recording": recording})

    async def recording(request: web.Request) -> web.StreamResponse:
        found = await load_call(object_id(request))
        root = Path(deps.settings.recordings_dir).resolve()
        path = Path(found.recording_path or "").resolve()
        if not found.recording_path or root not in path.parents or not path.is_file():
            raise FieldError("recording", "is not kept here (already attached to Bitrix24, or none)", 404)
        return web.FileResponse(path, headers={"Cache-Control": "private, no-store"})

    # ------------------------------------------------------------------ chats

    async def chat_lines(request: web.Request) -> web.Response:
        phones = await deps.directory.list(PHONES)
        lines = [{**p, "line": await deps.messaging.view(p["id"])} for p in phones]
        return pages.render(request, "chats.html", {"nav": "chats", "lines": lines})

    async def chat_list(request: web.Request) -> web.Response:
        phone = await deps.directory.get(PHONES, object_id(request), reveal=False)
        context = {
            "nav": "chats",
            "phone": phone,
            "line": await deps.messaging.view(phone["id"]),
            "chats": (await chats.list(phone["id"]))["chats"],
        }
        return pages.render(request, "chat_list.html", context)

    async def chat(request: web.Request) -> web.Response:
        phone = await deps.directory.get(PHONES, object_id(request), reveal=False)
        found = await chats.messages(phone["id"], request.match_info["customer"], request.query.get("limit"))
        return pages.render(request, "chat.html", {"nav": "chats", "phone": phone, **found})

    # ------------------------------------------------------------------ outbox

    async def outbox(request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        body = await list_jobs(deps.sessions, status=status, limit=PAGE_SIZE)
        context = {
            "nav": "outbox",
            "jobs": body["items"],
            "counts": body["counts"],
            "status": status,
            "statuses": STATUSES,
        }
        return pages.render(request, "outbox.html", context)

    async def retry(request: web.Request) -> web.StreamResponse:
        job_id = object_id(request)
        await deps.outbox.retry(job_id)
        pages.flash(request, N_("Job {id} runs again now."), id=job_id)
        raise web.HTTPSeeOther(f"{PANEL}/outbox")

    # ------------------------------------------------------------------ portals

    install_url = deps.settings.public_url.rstrip("/") + INSTALL_PATH

    async def portals(request: web.Request) -> web.Response:
        context = {
            "nav": "portals",
            "portals": await deps.directory.list(INSTANCES),
            "install_url": install_url,
            "client_id_set": bool(deps.settings.bitrix_client_id),
        }
        return pages.render(request, "portals.html", context)

    async def portal(request: web.Request) -> web.Response:
        instance = await deps.directory.get(INSTANCES, object_id(request), reveal=False)
        async with deps.sessions() as session:
            users = await list_users(session, instance["id"])
        phones = [p for p in await deps.directory.list(PHONES) if p["app_instance_id"] == instance["id"]]
        context = {"nav": "portals", "portal": instance, "users": users, "phones": phones, "install_url": install_url}
        return pages.render(request, "portal.html", context)

    async def sync(request: web.Request) -> web.StreamResponse:
        instance_id = object_id(request)
        await deps.bitrix.resync(instance_id)
        pages.flash(request, N_("Events, lines and users are being set up again."))
        raise web.HTTPSeeOther(f"{PANEL}/portals/{instance_id}")

    return [
        web.get(PANEL + "/calls", calls),
        web.get(PANEL + "/calls/{id}", call),
        web.get(PANEL + "/calls/{id}/recording", recording),
        web.get(PANEL + "/chats", chat_lines),
        web.get(PANEL + "/chats/{id}", chat_list),
        web.get(PANEL + "/chats/{id}/{customer}", chat),
        web.get(PANEL + "/outbox", outbox),
        web.post(PANEL + "/outbox/{id}/retry", retry),
        web.get(PANEL + "/portals", portals),
        web.get(PANEL + "/portals/{id}", portal),
        web.post(PANEL + "/portals/{id}/sync", sync),
    ]
