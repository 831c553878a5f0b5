"""Admin view of click-to-calls: what happened to each and why (GET /api/admin/callbacks)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.validation import integer
from thoth_pbx.features.callback.models import CallbackCall


def describe(row: CallbackCall) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "bitrix_call_id": row.bitrix_call_id,
        "app_instance_id": row.app_instance_id,
        "user_id": row.user_id,
        "extension": row.extension,
        "customer": row.customer,
        "line_number": row.line_number,
        "state": row.state,
        "status_code": row.status_code,
        "reason": row.reason,
        "started_at": iso(row.started_at),
        "answered_at": iso(row.answered_at),
        "ended_at": iso(row.ended_at),
        "recorded": row.recording_path is not None,
        "detail": row.detail,
    }


def callback_routes(sessions: async_sessionmaker[AsyncSession]) -> list[web.RouteDef]:
    async def list_callbacks(request: web.Request) -> web.Response:
        limit = integer("limit", request.query.get("limit", "50"), minimum=1, maximum=500)
        async with sessions() as session:
            rows = (await session.scalars(select(CallbackCall).order_by(CallbackCall.id.desc()).limit(limit))).all()
        return web.json_response({"items": [describe(r) for r in rows]})

    return [web.get("/api/admin/callbacks", list_callbacks)]
