"""The call log: one row per WhatsApp call."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base, Timestamps
from thoth_pbx.store.types import utcnow


class Call(Timestamps, Base):
    """One WhatsApp call as it goes through Asterisk and Bitrix24."""

    __tablename__ = "call"
    __table_args__ = (Index("ix_call_asterisk_state", "asterisk", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(64), unique=True)  # EXTERNAL_CALL_ID
    channel_id: Mapped[str] = mapped_column(String(64))
    phone_id: Mapped[int | None] = mapped_column(ForeignKey("phone.id", ondelete="SET NULL"))
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(8), default="in")
    caller: Mapped[str] = mapped_column(String(64))  # +E.164, else the BSUID (features/calls/identity.py)
    # who called (features/customers): a caller known by BSUID only has no number to find them by
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id", ondelete="SET NULL"), index=True)
    called: Mapped[str] = mapped_column(String(64))
    wacid: Mapped[str | None] = mapped_column(String(255))
    # ringing | connected | ended
    state: Mapped[str] = mapped_column(String(16), default="ringing")
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    answered_by_user_id: Mapped[int | None]
    answered_by_extension: Mapped[str | None] = mapped_column(String(32))
    status_code: Mapped[str | None] = mapped_column(String(8))
    bitrix_call_id: Mapped[str | None] = mapped_column(String(128))
    recording_path: Mapped[str | None] = mapped_column(String(1000))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the Asterisk the call came in on (settings `[[asterisk]]`); None: the first one
    asterisk: Mapped[str | None] = mapped_column(String(32))
