"""The admin's (support's) view of a number's chats: who wrote, and each chat's last messages
with direction, status and error."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core.validation import FieldError, integer
from thoth_pbx.features.directory import Phone
from thoth_pbx.features.messaging import history
from thoth_pbx.features.messaging.models import MessagingMessage, MessagingWindow
from thoth_pbx.features.messaging.window import Windows, closes_at, is_open
from thoth_pbx.store.types import utcnow

CUSTOMER_MAX = 128


class Chats:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def _phone(self, session: AsyncSession, phone_id: int) -> Phone:
        phone = await session.get(Phone, phone_id)
        if phone is None:
            raise FieldError("id", f"no phone with id {phone_id}", 404)
        return phone

    async def list(self, phone_id: int) -> dict[str, Any]:
        now = utcnow()
        async with self._sessions() as session:
            await self._phone(session, phone_id)
            rows = (
                await session.execute(
                    select(
                        MessagingMessage.customer,
                        func.count(MessagingMessage.id),
                        func.max(MessagingMessage.id),
                        func.max(MessagingMessage.created_at),
                    )
                    .where(MessagingMessage.phone_id == phone_id, MessagingMessage.customer != "")
                    .group_by(MessagingMessage.customer)
                    .order_by(func.max(MessagingMessage.id).desc())
                    .limit(500)
                )
            ).all()
            windows = {
                w.customer: w
                for w in (
                    await session.scalars(select(MessagingWindow).where(MessagingWindow.phone_id == phone_id))
                ).all()
            }
            failed = dict(
                (
                    await session.execute(
                        select(MessagingMessage.customer, func.count(MessagingMessage.id))
                        .where(MessagingMessage.phone_id == phone_id, MessagingMessage.status == "failed")
                        .group_by(MessagingMessage.customer)
                    )
                ).all()
            )
        return {
            "phone_id": phone_id,
            "chats": [
                {
                    "customer": c,
                    "messages": n,
                    "failed": failed.get(c, 0),
                    "last_at": at.isoformat(),
                    "window": window_state(windows[c].last_inbound_at if c in windows else None, now),
                }
                for c, n, _, at in rows
            ],
        }

    async def messages(self, phone_id: int, customer: str, limit: Any) -> dict[str, Any]:
        if not customer or len(customer) > CUSTOMER_MAX:
            raise FieldError("customer", f"must be 1 to {CUSTOMER_MAX} characters", 404)
        count = integer("limit", 50 if limit is None else limit, minimum=1, maximum=500)
        async with self._sessions() as session:
            await self._phone(session, phone_id)
            rows = (
                await session.scalars(
                    select(MessagingMessage)
                    .where(MessagingMessage.phone_id == phone_id, MessagingMessage.customer == customer)
                    .order_by(MessagingMessage.id.desc())
                    .limit(count)
                )
            ).all()
            last_inbound = await Windows.last_inbound(session, phone_id, customer)
        if not rows:
            raise FieldError("customer", f"no chat with {customer} on this number", 404)
        return {
            "phone_id": phone_id,
            "customer": customer,
            "window": window_state(last_inbound, utcnow()),
            "messages": [history.view(r) for r in reversed(rows)],
        }


def window_state(last_inbound: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    """A chat's 24-hour window as the admin reads it (pure)."""
    return {
        "open": is_open(last_inbound, now),
        "last_customer_message_at": last_inbound.isoformat() if last_inbound else None,
        "closes_at": closes_at(last_inbound).isoformat() if last_inbound else None,
    }
