"""Small key/value documents edited at run time (trunk settings, the health probe)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class Setting(Base):
    """Small key/value documents edited at run time (e.g. trunk settings)."""

    __tablename__ = "setting"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))
