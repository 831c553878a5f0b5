"""One row per click-to-call: a Bitrix24 operator calling a WhatsApp customer back.

Kept apart from the incoming `call` table: its life is different (permission, request, two
legs we originate) and the incoming recovery must never pick these rows up."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base, Timestamps
from thoth_pbx.store.types import utcnow

# new -> dialing (operator leg) -> calling (customer leg) -> connected -> ended
# new -> waiting (permission requested, a call-back may follow) -> ended
STATES = ("new", "waiting", "dialing", "calling", "connected", "ended")


class CallbackCall(Timestamps, Base):
    __tablename__ = "callback_call"
    __table_args__ = (UniqueConstraint("app_instance_id", "bitrix_call_id", name="uq_callback_call_bitrix"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="SET NULL"))
    phone_id: Mapped[int | None] = mapped_column(ForeignKey("phone.id", ondelete="SET NULL"))
    bitrix_call_id: Mapped[str] = mapped_column(String(128))  # CALL_ID Bitrix24 registered
    user_id: Mapped[int] = mapped_column()  # the operator (Bitrix24 USER_ID)
    extension: Mapped[str | None] = mapped_column(String(32))
    customer: Mapped[str] = mapped_column(String(64))  # +E.164
    line_number: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="new")
    operator_channel: Mapped[str | None] = mapped_column(String(64))
    customer_channel: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    status_code: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(String(500))
    recording_path: Mapped[str | None] = mapped_column(String(1000))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the Asterisk that dials it: its number's server (settings `[[asterisk]]`); None: the first
    asterisk: Mapped[str | None] = mapped_column(String(32))
