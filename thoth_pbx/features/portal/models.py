"""Bitrix24 users of a portal and their extensions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class BitrixUser(Base):
    """A Bitrix24 user of a portal and their inner phone number (user.get UF_PHONE_INNER)."""

    __tablename__ = "bitrix_user"
    __table_args__ = (
        UniqueConstraint("app_instance_id", "user_id", name="uq_bitrix_user_instance_user"),
        Index("ix_bitrix_user_extension", "app_instance_id", "extension"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    app_instance_id: Mapped[int] = mapped_column(ForeignKey("app_instance.id", ondelete="CASCADE"))
    user_id: Mapped[int]
    extension: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
