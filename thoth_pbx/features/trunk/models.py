"""The history of trunk applies."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class PbxRevision(Base):
    """One attempt to apply rendered Asterisk config: who, when, what changed, what happened."""

    __tablename__ = "pbx_revision"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    # applied | unchanged | rolled_back | restart_required | failed
    result: Mapped[str] = mapped_column(String(32))
    diff: Mapped[str] = mapped_column(Text, default="")
    files: Mapped[dict[str, Any]] = mapped_column(default=dict)  # path -> sha256 of what was written
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    asterisk: Mapped[str | None] = mapped_column(String(32))  # the server applied to; None: the first
