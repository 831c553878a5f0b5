"""The Open Lines side of each WhatsApp number: which portal line it feeds, and how the
connector is doing there (what the admin sees as green / yellow / red)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
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


class MessagingInbound(Base):
    """One row per WhatsApp message handed to Bitrix24: the unique wamid makes a re-dispatched
    inbox event (a crash between the job's commit and the event's processed mark) a no-op."""

    __tablename__ = "messaging_inbound"

    id: Mapped[int] = mapped_column(primary_key=True)
    wamid: Mapped[str] = mapped_column(String(255), unique=True)
    phone_id: Mapped[int]
    job_id: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
