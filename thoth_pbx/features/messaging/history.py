"""The bridged messages as stored (`messaging_message`): what statuses, replies, read marks and
the admin's chat view look up. Status changes only move forward (Meta promises no order)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.features.messaging.models import MessagingMessage

# inbound: received -> in_bitrix -> read (we marked it read on WhatsApp) | failed
# outbound: queued -> sent -> delivered -> read | failed
RANK = {"queued": 0, "received": 0, "sent": 1, "in_bitrix": 1, "delivered": 2, "read": 3, "failed": 4}
PREVIEW_CHARS = 200


def moves_forward(current: str, new: str) -> bool:
    """A status may only advance; `failed` ends a message that was not delivered yet."""
    if new == "failed":
        return current in ("queued", "sent", "received")
    return RANK.get(new, -1) > RANK.get(current, 0) and current != "failed"


def preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


async def by_wamid(session: AsyncSession, wamid: str) -> MessagingMessage | None:
    return await session.scalar(select(MessagingMessage).where(MessagingMessage.wamid == wamid))


async def by_wamids(session: AsyncSession, wamids: set[str]) -> dict[str, MessagingMessage]:
    """The messages of these wamids, by wamid (those not stored are missing)."""
    if not wamids:
        return {}
    rows = await session.scalars(select(MessagingMessage).where(MessagingMessage.wamid.in_(wamids)))
    return {row.wamid: row for row in rows if row.wamid is not None}


async def chat_im_id(session: AsyncSession, phone_id: int, customer: str) -> str | None:
    """The Open Lines chat id Bitrix24 gave this customer's chat (latest known)."""
    return await session.scalar(
        select(MessagingMessage.im_chat_id)
        .where(
            MessagingMessage.phone_id == phone_id,
            MessagingMessage.customer == customer,
            MessagingMessage.im_chat_id.is_not(None),
        )
        .order_by(MessagingMessage.id.desc())
        .limit(1)
    )


async def unread_inbound(session: AsyncSession, phone_id: int, customer: str) -> MessagingMessage | None:
    """The customer's latest message not yet marked read on WhatsApp (Meta marks the earlier ones with it)."""
    return await session.scalar(
        select(MessagingMessage)
        .where(
            MessagingMessage.phone_id == phone_id,
            MessagingMessage.customer == customer,
            MessagingMessage.direction == "in",
            MessagingMessage.status == "in_bitrix",
            MessagingMessage.wamid.is_not(None),
        )
        .order_by(MessagingMessage.id.desc())
        .limit(1)
    )


async def mark_inbound_read(session: AsyncSession, phone_id: int, customer: str, up_to_id: int) -> None:
    await session.execute(
        update(MessagingMessage)
        .where(
            MessagingMessage.phone_id == phone_id,
            MessagingMessage.customer == customer,
            MessagingMessage.direction == "in",
            MessagingMessage.status == "in_bitrix",
            MessagingMessage.id <= up_to_id,
        )
        .values(status="read")
    )


async def quoted_inbound(session: AsyncSession, phone_id: int, customer: str, quoted: str) -> str | None:
    """The wamid of the customer's latest message whose text starts like `quoted` (an operator's quote)."""
    wanted = preview(quoted)[:60]
    if not wanted:
        return None
    rows = await session.scalars(
        select(MessagingMessage)
        .where(
            MessagingMessage.phone_id == phone_id,
            MessagingMessage.customer == customer,
            MessagingMessage.direction == "in",
            MessagingMessage.wamid.is_not(None),
        )
        .order_by(MessagingMessage.id.desc())
        .limit(200)
    )
    for row in rows:
        if row.preview.startswith(wanted) or wanted.startswith(row.preview[:60] or "\0"):
            return row.wamid
    return None


def view(row: MessagingMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "direction": row.direction,
        "kind": row.kind,
        "text": row.preview,
        "status": row.status,
        "error_code": row.error_code,
        "error": row.error,
        "wamid": row.wamid,
        "bitrix": {"chat_id": row.im_chat_id, "message_id": row.im_message_id},
        "at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }
