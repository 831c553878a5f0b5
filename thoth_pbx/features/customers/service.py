"""Finding, creating and linking customer identities (database work only, in the caller's
transaction), and whom a message to a chat goes to."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.features.customers.models import Customer
from thoth_pbx.store.types import utcnow

BSUID = re.compile(r"[A-Z]{2}(\.ENT)?\.[A-Za-z0-9]{1,128}")
SEEN_PRECISION = dt.timedelta(minutes=5)  # last_seen_at is this exact at best
_MAX_HOPS = 20  # a chain of number changes longer than this is a loop in bad data, not a customer


def clean_phone(value: str | None) -> str | None:
    digits = "".join(ch for ch in value or "" if ch.isdigit())
    return digits if 5 <= len(digits) <= 15 else None


def clean_bsuid(value: str | None) -> str | None:
    return value if value and BSUID.fullmatch(value) else None


async def find(
    session: AsyncSession, account_id: int, *, bsuid: str | None = None, phone: str | None = None
) -> Customer | None:
    """The current identity with this BSUID, else the latest with this phone number."""
    bsuid, phone = clean_bsuid(bsuid), clean_phone(phone)
    if bsuid:
        row = await session.scalar(select(Customer).where(Customer.account_id == account_id, Customer.bsuid == bsuid))
        if row is not None:
            return await _current(session, row)
    if phone:
        row = await session.scalar(
            select(Customer)
            .where(Customer.account_id == account_id, Customer.phone == phone, Customer.replaced_by_id.is_(None))
            .order_by(Customer.id.desc())
            .limit(1)
        )
        if row is not None and (not bsuid or row.bsuid is None):
            return row  # with another BSUID it is someone else who got the number
    return None


async def _current(session: AsyncSession, row: Customer) -> Customer:
    for _ in range(_MAX_HOPS):
        if row.replaced_by_id is None:
            return row
        newer = await session.get(Customer, row.replaced_by_id)
        if newer is None:
            return row
        row = newer
    return row


async def identify(
    session: AsyncSession,
    account_id: int,
    *,
    bsuid: str | None,
    phone: str | None,
    username: str | None = None,
    name: str | None = None,
) -> Customer:
    """The customer Meta describes (a message's sender, a caller), created at first sight and
    completed with whatever Meta shares this time."""
    bsuid, phone = clean_bsuid(bsuid), clean_phone(phone)
    row = await find(session, account_id, bsuid=bsuid, phone=phone)
    if row is None:
        row = await _create(session, account_id, bsuid=bsuid, phone=phone)
    if bsuid and row.bsuid is None:
        row.bsuid = bsuid
    if phone and row.phone != phone:
        row.phone = phone  # the BSUID said who it is; the number Meta shares now is theirs
    if username and row.username != username[:64]:
        row.username = username[:64]
    if name and row.profile_name != name[:200]:
        row.profile_name = name[:200]
    now = utcnow()
    if row.last_seen_at is None or now - row.last_seen_at > SEEN_PRECISION:  # not a row write per message
        row.last_seen_at = now
    return row


async def _create(session: AsyncSession, account_id: int, *, bsuid: str | None, phone: str | None) -> Customer:
    key = phone or bsuid or "unknown"
    try:
        async with session.begin_nested():  # another transaction may see the same BSUID first
            row = Customer(account_id=account_id, bsuid=bsuid, phone=phone, chat_key=key[:128])
            session.add(row)
        return row
    except IntegrityError:
        found = await find(session, account_id, bsuid=bsuid, phone=phone)
        assert found is not None
        return found


async def number_changed(
    session: AsyncSession,
    account_id: int,
    *,
    old_bsuid: str | None,
    old_phone: str | None,
    new_bsuid: str | None,
    new_phone: str | None,
) -> Customer | None:
    """Meta's system message (user_changed_number / user_changed_user_id): the new identity
    takes over the old one's chat and CRM link, so the history continues. None when the old
    identity is unknown here (nothing to continue)."""
    old = await find(session, account_id, bsuid=old_bsuid, phone=old_phone)
    if old is None:
        return None
    new_bsuid, new_phone = clean_bsuid(new_bsuid), clean_phone(new_phone)
    if new_bsuid and old.bsuid == new_bsuid:
        if new_phone:
            old.phone = new_phone
        return old
    new = await find(session, account_id, bsuid=new_bsuid) if new_bsuid else None
    if new is None:
        new = await _create(session, account_id, bsuid=new_bsuid, phone=new_phone or (None if new_bsuid else old.phone))
    if new.id == old.id:
        return old
    new.chat_key = old.chat_key
    new.phone = new_phone or new.phone or (old.phone if not new_bsuid else None)
    new.username = new.username or old.username
    new.profile_name = new.profile_name or old.profile_name
    if new.crm_entity_id is None:
        new.crm_entity_type, new.crm_entity_id = old.crm_entity_type, old.crm_entity_id
    await session.flush()
    old.replaced_by_id = new.id
    return new


CRM_TYPES = ("CONTACT", "COMPANY", "LEAD")  # what telephony.externalCall.register binds a call to


async def link_crm(session: AsyncSession, customer_id: int, entity_type: Any, entity_id: Any) -> bool:
    """Remember the Bitrix24 CRM entity a customer's call or chat was bound to, when the customer
    has none yet: the next call of a customer without a phone number is bound to it instead of
    searched by number. An entity Bitrix24 did not describe (type, id) is ignored."""
    try:
        number = int(entity_id)
    except (TypeError, ValueError):
        return False
    if entity_type not in CRM_TYPES or number <= 0:
        return False
    row = await session.get(Customer, customer_id)
    if row is None or row.crm_entity_id is not None:
        return False
    row = await _current(session, row)
    if row.crm_entity_id is not None:
        return False
    row.crm_entity_type, row.crm_entity_id = entity_type, number
    return True


@dataclass(frozen=True)
class Recipient:
    """Whom a message to a chat goes to: the phone number when known (`to`), else the BSUID
    (`recipient`)."""

    phone: str | None
    bsuid: str | None

    def fields(self) -> dict[str, Any]:
        return {"to": self.phone} if self.phone else {"recipient": self.bsuid}


async def recipient_of(session: AsyncSession, account_id: int, chat_key: str) -> Recipient:
    """The current identity of the chat (after any number change); a chat older than the
    identities is its own key."""
    row = await session.scalar(
        select(Customer)
        .where(Customer.account_id == account_id, Customer.chat_key == chat_key)
        .order_by(Customer.replaced_by_id.is_not(None), Customer.id.desc())
        .limit(1)
    )
    if row is not None:
        row = await _current(session, row)
        if row.phone or row.bsuid:
            return Recipient(row.phone, row.bsuid if not row.phone else None)
    if clean_bsuid(chat_key):
        return Recipient(None, chat_key)
    return Recipient(chat_key, None)


def view(row: Customer) -> dict[str, Any]:
    return {
        "id": row.id,
        "account_id": row.account_id,
        "bsuid": row.bsuid,
        "phone": row.phone,
        "username": row.username,
        "profile_name": row.profile_name,
        "chat_key": row.chat_key,
        "replaced_by_id": row.replaced_by_id,
        "crm": {"entity_type": row.crm_entity_type, "entity_id": row.crm_entity_id}
        if row.crm_entity_id is not None
        else None,
        "first_seen_at": row.first_seen_at.isoformat(),
        "last_seen_at": row.last_seen_at.isoformat(),
    }
