"""The outbox table: durable jobs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class OutboxJob(Base):
    """A durable call to Bitrix24/Meta; jobs with the same `chain` run strictly in `id` order."""

    __tablename__ = "outbox_job"
    __table_args__ = (
        Index("ix_outbox_job_due", "status", "next_attempt_at"),
        Index("ix_outbox_job_chain", "chain", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="CASCADE"))
    chain: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]]
    # pending | running | done | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    done_at: Mapped[dt.datetime | None]
    # 0003_bitrix: an earlier attempt may have reached the remote side without us seeing
    # the answer (crash, timeout); handlers use it to recognise "already done" replies.
    maybe_delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    last_attempt_at: Mapped[dt.datetime | None]
    # 0012_outbox_lease: the instance running the job and until when its claim holds; the
    # instance renews it while the job runs, another instance takes the job once it expired
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None]


class RateBucket(Base):
    """A portal's leaky bucket shared by every instance on PostgreSQL (SQLite: one process,
    the bucket stays in memory): the level as of `drained_at`, updated by one statement per
    request (outbox/rate.py)."""

    __tablename__ = "rate_bucket"

    app_instance_id: Mapped[int] = mapped_column(ForeignKey("app_instance.id", ondelete="CASCADE"), primary_key=True)
    level: Mapped[float] = mapped_column(Float, default=0.0)
    drained_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
