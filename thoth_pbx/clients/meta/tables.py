"""The durable webhook inbox table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class WebhookInbox(Base):
    """Every change Meta delivered, stored before we answer 200; dedup_key makes retries harmless."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (Index("ix_webhook_inbox_pending", "processed_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(300), unique=True)
    waba_account_id: Mapped[int | None] = mapped_column(ForeignKey("waba_account.id", ondelete="SET NULL"))
    phone_number_id: Mapped[str | None] = mapped_column(String(32))
    field: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))  # message, status, call.connect, ...
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # 0004: the entry's `time` (when Meta triggered the change); part of the dedup key of
    # changes without item ids (account_settings_update, account_update)
    entry_time: Mapped[dt.datetime | None]
