"""A WhatsApp customer as thoth-pbx knows them (meta-whatsapp-cloud-api.md §4 "Customer identity").

The business-scoped user id (BSUID, e.g. `US.13491208655302741918`) is the stable key when Meta
gives one; phone number, username and profile name are attributes filled in when Meta shares
them. `chat_key` names the customer's chat everywhere (the Open Lines chat id, the messaging
history, the 24-hour window): the phone number at first sight (what chats were keyed by before
identities existed), else the BSUID, and it is inherited when the customer changes their number
(a new BSUID), so the history continues. `replaced_by_id` points from the old identity to the
new one."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from thoth_pbx.store.base import Base
from thoth_pbx.store.types import utcnow


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (
        UniqueConstraint("account_id", "bsuid", name="uq_customer_bsuid"),
        Index("ix_customer_phone", "account_id", "phone"),
        Index("ix_customer_chat_key", "account_id", "chat_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("waba_account.id", ondelete="CASCADE"))
    bsuid: Mapped[str | None] = mapped_column(String(160))
    phone: Mapped[str | None] = mapped_column(String(20))  # digits, as Meta's wa_id
    username: Mapped[str | None] = mapped_column(String(64))
    profile_name: Mapped[str | None] = mapped_column(String(200))
    chat_key: Mapped[str] = mapped_column(String(128))
    replaced_by_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("customer.id", ondelete="SET NULL"))
    crm_entity_type: Mapped[str | None] = mapped_column(String(16))  # CONTACT | COMPANY | LEAD
    crm_entity_id: Mapped[int | None]
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
