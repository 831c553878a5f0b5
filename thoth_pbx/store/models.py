"""Database models for everything the mission stores.

Secrets use `EncryptedText`; values that must be looked up or kept unique without being
stored in plain text (webhook api-key, verify token) also get an HMAC `*_fingerprint`.
Feature code that needs more columns adds them with its own Alembic migration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.orm.base import NO_VALUE

from thoth_pbx.store.types import EncryptedText, UtcDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, dt.datetime: UtcDateTime}


class Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WabaAccount(Timestamps, Base):
    """A WhatsApp Business Account and the credentials thoth-pbx uses for it."""

    __tablename__ = "waba_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    waba_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    access_token: Mapped[str] = mapped_column(EncryptedText)
    token_expires_at: Mapped[dt.datetime | None]
    token_checked_at: Mapped[dt.datetime | None]
    app_secret: Mapped[str | None] = mapped_column(EncryptedText)
    verify_token: Mapped[str] = mapped_column(EncryptedText)
    verify_token_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    api_key: Mapped[str] = mapped_column(EncryptedText)
    api_key_fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # migration 0002_meta: the Meta app (debug_token with app credentials, SIP server owner)
    app_id: Mapped[str | None] = mapped_column(String(32))
    token_info: Mapped[dict[str, Any] | None]  # last debug_token answer, without the token

    phones: Mapped[list[Phone]] = relationship(back_populates="waba", passive_deletes=True)


class AppInstance(Timestamps, Base):
    """One Bitrix24 portal where our local application is installed (keyed by member_id)."""

    __tablename__ = "app_instance"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), unique=True)
    domain: Mapped[str] = mapped_column(String(255))
    client_endpoint: Mapped[str | None] = mapped_column(String(500))
    server_endpoint: Mapped[str | None] = mapped_column(String(500))
    access_token: Mapped[str | None] = mapped_column(EncryptedText)
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText)
    application_token: Mapped[str | None] = mapped_column(EncryptedText)
    expires_at: Mapped[dt.datetime | None]
    scope: Mapped[str | None] = mapped_column(String(500))
    # active | needs_reauth | uninstalled
    status: Mapped[str] = mapped_column(String(32), default="active")
    status_detail: Mapped[str | None] = mapped_column(Text)
    # leaky bucket of the portal's plan: 2/50 standard, 5/250 Enterprise
    rate_per_s: Mapped[float] = mapped_column(default=2.0)
    rate_burst: Mapped[int] = mapped_column(default=50)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    phones: Mapped[list[Phone]] = relationship(back_populates="instance")


class Phone(Timestamps, Base):
    """A WhatsApp business phone number with its messaging and calling set-up."""

    __tablename__ = "phone"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)  # E.164, with '+'
    phone_number_id: Mapped[str] = mapped_column(String(32), unique=True)
    waba_account_id: Mapped[int] = mapped_column(ForeignKey("waba_account.id", ondelete="RESTRICT"))
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="SET NULL"))
    sms_service: Mapped[bool] = mapped_column(Boolean, default=False)
    calling_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sip_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sip_hostname: Mapped[str | None] = mapped_column(String(253))
    sip_port: Mapped[int] = mapped_column(Integer, default=5061)
    srtp_key_exchange: Mapped[str] = mapped_column(String(8), default="SDES")
    sip_user_password: Mapped[str | None] = mapped_column(EncryptedText)
    # Meta's last error for this number: {code, subcode, message, fbtrace_id, hint, at}
    last_error: Mapped[dict[str, Any] | None]
    calling_state: Mapped[dict[str, Any] | None]  # what Meta reported on the last read-back
    trunk_needs_apply: Mapped[bool] = mapped_column(Boolean, default=False)

    waba: Mapped[WabaAccount] = relationship(back_populates="phones")
    instance: Mapped[AppInstance | None] = relationship(back_populates="phones")

    @validates("sip_hostname", "sip_port", "sip_user_password", "sip_enabled")
    def _trunk_input_changed(self, key: str, value: Any) -> Any:
        # The PBX trunk renders the SIP-enabled phones from these: switching SIP, or changing
        # them while SIP is on, means the trunk must be applied again. Reads no lazy state.
        state = inspect(self)
        old = state.attrs[key].loaded_value
        if (old is NO_VALUE or old != value) and (key == "sip_enabled" or state.dict.get("sip_enabled")):
            self.trunk_needs_apply = True
        return value


class Call(Timestamps, Base):
    """One WhatsApp call as it goes through Asterisk and Bitrix24."""

    __tablename__ = "call"

    id: Mapped[int] = mapped_column(primary_key=True)
    linkedid: Mapped[str] = mapped_column(String(64), unique=True)  # EXTERNAL_CALL_ID
    channel_id: Mapped[str] = mapped_column(String(64))
    phone_id: Mapped[int | None] = mapped_column(ForeignKey("phone.id", ondelete="SET NULL"))
    app_instance_id: Mapped[int | None] = mapped_column(ForeignKey("app_instance.id", ondelete="SET NULL"))
    direction: Mapped[str] = mapped_column(String(8), default="in")
    caller: Mapped[str] = mapped_column(String(64))
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


class Setting(Base):
    """Small key/value documents edited at run time (e.g. trunk settings)."""

    __tablename__ = "setting"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))


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
