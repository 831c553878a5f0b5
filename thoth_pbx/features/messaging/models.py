"""The Open Lines side of each WhatsApp number: which portal line it feeds, and how the
connector is doing there (what the admin sees as green / yellow / red)."""

from __future__ import annotations

import datetime as dt
from typing import Any

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


class MessagingTemplate(Base):
    """A message template of a WhatsApp Business account as Graph last listed it
    (`GET /{waba_id}/message_templates`); what template commands are checked against."""

    __tablename__ = "messaging_template"
    __table_args__ = (UniqueConstraint("account_id", "name", "language", name="uq_messaging_template_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("waba_account.id", ondelete="CASCADE"))
    template_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    definition: Mapped[dict[str, Any]]  # {"components": [...]} as Graph gives them
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MessagingTemplateSync(Base):
    """When an account's templates were last listed, and why the last try failed (admin view)."""

    __tablename__ = "messaging_template_sync"

    account_id: Mapped[int] = mapped_column(ForeignKey("waba_account.id", ondelete="CASCADE"), primary_key=True)
    synced_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class MessagingWindow(Base):
    """The 24-hour customer service window of one chat: opened by each customer message; the
    notices about its closing are sent once per opening (the *_notice_for columns hold the
    customer message time they were sent for)."""

    __tablename__ = "messaging_window"
    __table_args__ = (UniqueConstraint("phone_id", "customer", name="uq_messaging_window_chat"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_id: Mapped[int]
    customer: Mapped[str] = mapped_column(String(128))
    app_instance_id: Mapped[int | None]
    line_id: Mapped[int | None]
    im_chat_id: Mapped[str | None] = mapped_column(String(32))
    last_inbound_at: Mapped[dt.datetime]
    closing_notice_for: Mapped[dt.datetime | None]
    closed_notice_for: Mapped[dt.datetime | None]


class MessagingSms(Base):
    """An SMS a Bitrix24 portal handed to our sender (messageservice), and what became of it.

    status: `received` -> `sent` -> `delivered`, or `undelivered` / `failed`; `reported` is the
    last status told to the portal (messageservice.message.status.update)."""

    __tablename__ = "messaging_sms"
    __table_args__ = (UniqueConstraint("app_instance_id", "bitrix_message_id", name="uq_messaging_sms_message"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_instance_id: Mapped[int] = mapped_column(ForeignKey("app_instance.id", ondelete="CASCADE"))
    phone_id: Mapped[int]
    code: Mapped[str] = mapped_column(String(64))
    bitrix_message_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    row_id: Mapped[int | None]  # the messaging_message of the send
    status: Mapped[str] = mapped_column(String(16), default="received")
    reported: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MessagingSmsSender(Base):
    """A sender we registered on a portal (messageservice.sender.add), so a cleared flag or an
    unlinked number is known to need a delete there."""

    __tablename__ = "messaging_sms_sender"

    app_instance_id: Mapped[int] = mapped_column(ForeignKey("app_instance.id", ondelete="CASCADE"), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), primary_key=True)


async def line_of(session: AsyncSession, phone_id: int) -> MessagingLine | None:
    """The Open Line row of a WhatsApp number (None before its first set-up)."""
    return await session.scalar(select(MessagingLine).where(MessagingLine.phone_id == phone_id))
