"""Admin view of WhatsApp calls: what happened to each, and where its Bitrix24 log stands."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError, choice, integer
from thoth_pbx.features.calls.models import Call

STATES = ("ringing", "connected", "ended")


def describe(call: Call) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": call.id,
        "linkedid": call.linkedid,
        "caller": call.caller,  # +number, else the BSUID (a caller with a WhatsApp username)
        "customer_id": call.customer_id,  # GET /api/admin/customers/{id}: phone, username, BSUID
        "called": call.called,
        "wacid": call.wacid,
        "state": call.state,
        "status_code": call.status_code,
        "started_at": iso(call.started_at),
        "answered_at": iso(call.answered_at),
        "ended_at": iso(call.ended_at),
        "answered_by_extension": call.answered_by_extension,
        "answered_by_user_id": call.answered_by_user_id,
        "app_instance_id": call.app_instance_id,
        "bitrix_call_id": call.bitrix_call_id,
        "recorded": call.recording_path is not None,
        "asterisk": call.asterisk,  # the server it came in on (settings [[asterisk]]); null: the first
        "detail": call.detail,
    }


def calls_routes(sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
    async def list_calls(request: web.Request) -> web.Response:
        limit = integer("limit", request.query.get("limit", "50"), minimum=1, maximum=500)
        query = select(Call).order_by(Call.id.desc()).limit(limit)
        if "state" in request.query:
            query = query.where(Call.state == choice("state", request.query["state"], STATES))
        async with sessions() as session:
            rows = (await session.scalars(query)).all()
        return web.json_response({"items": [describe(c) for c in rows]})

    async def get_call(request: web.Request) -> web.Response:
        call_id = object_id(request)
        async with sessions() as session:
            call = await session.get(Call, call_id)
        if call is None:
            raise FieldError("id", f"no call with id {call_id}", 404)
        return web.json_response(describe(call))

    return [web.get("/api/admin/calls", list_calls), web.get("/api/admin/calls/{id}", get_call)]
