"""The Open Lines side of each WhatsApp number: which portal line it feeds, and how the
connector is doing there (what the admin sees as green / yellow / red)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class MessagingLine(Base):
    __tablename__ = "messaging_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    # no foreign key: the row outlives a deleted phone long enough to deactivate its line
    phone_id: Mapped[int] = mapped_column(unique=True)
    number: Mapped[str] = mapped_column(String(20))
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="SET NULL"))
    line_id: Mapped[int | None]  # Bitrix24 Open Line (imopenlines config) ID
    # pending | green | yellow | red | unlinked
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MessagingMessage(Base):
    """One WhatsApp message of a bridged chat, either way: the wamid <-> Open Lines ids map that
    statuses need, the per-chat history the admin reads, and (unique wamid) what makes an inbound
    event dispatched twice a no-op.

    status: inbound `received` -> `in_bitrix` | `failed`; outbound `queued` -> `sent` ->
    `delivered` -> `read`, or `failed` with Meta's code."""

    __tablename__ = "messaging_message"
    __table_args__ = (
        Index("ix_messaging_message_chat", "phone_id", "customer", "id"),
        # an operator message (im ids) becomes its parts (text, each file) once, however often handled
        UniqueConstraint("app_instance_id", "im_chat_id", "im_message_id", "part", name="uq_messaging_message_im"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_id: Mapped[int]
    app_instance_id: Mapped[int | None]
    line_id: Mapped[int | None]
    customer: Mapped[str] = mapped_column(String(128))  # the chat: wa_id, else the BSUID
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    wamid: Mapped[str | None] = mapped_column(String(255), unique=True)
    im_chat_id: Mapped[str | None] = mapped_column(String(32))
    im_message_id: Mapped[str | None] = mapped_column(String(32))
    part: Mapped[int] = mapped_column(default=0, server_default="0")
    kind: Mapped[str] = mapped_column(String(32))
    preview: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


async def line_of(session: AsyncSession, phone_id: int) -> MessagingLine | None:
    """The Open Line row of a WhatsApp number (None before its first set-up)."""
    return await session.scalar(select(MessagingLine).where(MessagingLine.phone_id == phone_id))
