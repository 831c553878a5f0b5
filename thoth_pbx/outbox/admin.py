"""The outbox as an admin sees it: jobs by status, kind, portal or chain, with counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.validation import FieldError
from thoth_pbx.outbox.models import OutboxJob

STATUSES = ("pending", "running", "done", "failed")


async def list_jobs(
    sessions: async_sessionmaker[AsyncSession],
    *,
    status: str | None = None,
    kind: str | None = None,
    instance_id: int | None = None,
    chain: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Newest first; without `status`, everything not done yet."""
    if status is not None and status not in STATUSES:
        raise FieldError("status", f"must be one of {', '.join(STATUSES)}")
    async with sessions() as session:
        query = select(OutboxJob)
        if status is None:
            query = query.where(OutboxJob.status != "done")
        else:
            query = query.where(OutboxJob.status == status)
        if kind:
            query = query.where(OutboxJob.kind == kind)
        if instance_id is not None:
            query = query.where(OutboxJob.app_instance_id == instance_id)
        if chain:
            query = query.where(OutboxJob.chain == chain)
        rows = (await session.scalars(query.order_by(OutboxJob.id.desc()).limit(limit))).all()
        counts = dict((await session.execute(select(OutboxJob.status, func.count()).group_by(OutboxJob.status))).all())
    return {"items": [describe(row) for row in rows], "counts": {s: counts.get(s, 0) for s in STATUSES}}


def describe(row: OutboxJob) -> dict[str, Any]:
    """Admin view of a job (payloads never hold secrets by contract)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": row.id,
        "kind": row.kind,
        "instance_id": row.app_instance_id,
        "chain": row.chain,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "last_attempt_at": iso(row.last_attempt_at),
        "last_error": row.last_error,
        "maybe_delivered": bool(row.maybe_delivered),
        # several instances: which one runs the job, and until when its claim holds
        "claimed_by": row.claimed_by if row.status == "running" else None,
        "lease_until": iso(row.lease_until) if row.status == "running" else None,
        "payload": row.payload,
        "result": row.result,
        "created_at": iso(row.created_at),
        "done_at": iso(row.done_at),
    }
