"""WhatsApp Business accounts, their phone numbers and the Bitrix24 portals they belong to.

Secrets use `EncryptedText`; values that must be looked up or kept unique without being
stored in plain text (webhook api-key, verify token) also get an HMAC `*_fingerprint`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates
from sqlalchemy.orm.base import NO_VALUE

from thoth_pbx.store.base import Base, Timestamps
from thoth_pbx.store.types import EncryptedText


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
    # the Asterisk whose trunk carries this number's calls (settings `[[asterisk]]`); None: the first
    asterisk: Mapped[str | None] = mapped_column(String(32))

    waba: Mapped[WabaAccount] = relationship(back_populates="phones")
    instance: Mapped[AppInstance | None] = relationship(back_populates="phones")

    @validates("sip_hostname", "sip_port", "sip_user_password", "sip_enabled", "asterisk")
    def _trunk_input_changed(self, key: str, value: Any) -> Any:
        # The PBX trunk renders the SIP-enabled phones from these: switching SIP, or changing
        # them while SIP is on, means the trunk must be applied again. Reads no lazy state.
        state = inspect(self)
        old = state.attrs[key].loaded_value
        if (old is NO_VALUE or old != value) and (key == "sip_enabled" or state.dict.get("sip_enabled")):
            self.trunk_needs_apply = True
        return value


async def phone_and_account(session: AsyncSession, phone_id: int) -> tuple[Phone, WabaAccount] | None:
    """A WhatsApp number with the account whose token speaks for it (None: the number is gone)."""
    phone = await session.get(Phone, phone_id)
    account = await session.get(WabaAccount, phone.waba_account_id) if phone else None
    return (phone, account) if phone is not None and account is not None else None
