"""Bitrix24 users <-> Asterisk extensions, from user.get's UF_PHONE_INNER.

`fetch_users` pages through user.get (50 per page); `store_users` replaces the portal's
rows in `bitrix_user` in one transaction; the lookups read that table, so a call never
waits for Bitrix to know who extension 101 is. The map is refreshed after install, on
demand (admin) and periodically (BitrixService).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.clients.bitrix.telephony import Caller
from thoth_pbx.core.validation import is_extension
from thoth_pbx.features.portal.models import BitrixUser
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

MAX_PAGES = 200  # 10 000 users; a guard against a portal that keeps answering `next`


@dataclass(frozen=True)
class PortalUser:
    id: int
    name: str
    extension: str | None
    active: bool


def parse_user(item: dict[str, Any]) -> PortalUser | None:
    try:
        user_id = int(item["ID"])
    except (KeyError, TypeError, ValueError):
        return None
    extension = str(item.get("UF_PHONE_INNER") or "").strip() or None
    if extension is not None and not is_extension(extension):
        # the same rule as an extension typed by an admin: this value becomes a dial string
        log.warning(
            "Bitrix user has an inner phone number that is not an extension; ignored",
            extra={"user_id": user_id, "field": "UF_PHONE_INNER", "value": extension[:80]},
        )
        extension = None
    name = " ".join(p for p in (str(item.get("NAME") or "").strip(), str(item.get("LAST_NAME") or "").strip()) if p)
    active = item.get("ACTIVE") in (True, "Y", "1", 1, "true")
    return PortalUser(user_id, name or f"user {user_id}", extension, active)


def extension_map(users: list[PortalUser]) -> dict[str, int]:
    """extension -> user id for active users; when two share an extension the lower id wins."""
    out: dict[str, int] = {}
    for user in sorted(users, key=lambda u: u.id):
        if user.active and user.extension:
            if user.extension in out:
                log.warning(
                    "two Bitrix users share an inner phone number",
                    extra={"extension": user.extension, "kept": out[user.extension], "ignored": user.id},
                )
                continue
            out[user.extension] = user.id
    return out


async def fetch_users(caller: Caller) -> list[PortalUser]:
    """All active employees, every page."""
    users: list[PortalUser] = []
    start: int | None = 0
    for _ in range(MAX_PAGES):
        reply = await caller.call_reply("user.get", {"FILTER": {"ACTIVE": True}, "start": start})
        for item in reply.result or []:
            user = parse_user(item) if isinstance(item, dict) else None
            if user is not None:
                users.append(user)
        start = reply.next
        if start is None:
            break
    return users


async def store_users(session: AsyncSession, instance_id: int, users: list[PortalUser]) -> int:
    """Replace the portal's user map (in the caller's transaction)."""
    await session.execute(delete(BitrixUser).where(BitrixUser.app_instance_id == instance_id))
    keep = extension_map(users)
    now = utcnow()
    for user in users:
        extension = user.extension if keep.get(user.extension or "") == user.id else None
        session.add(
            BitrixUser(
                app_instance_id=instance_id,
                user_id=user.id,
                extension=extension,
                name=user.name[:200],
                active=user.active,
                synced_at=now,
            )
        )
    return len(users)


async def user_for_extension(session: AsyncSession, instance_id: int, extension: str) -> int | None:
    return await session.scalar(
        select(BitrixUser.user_id).where(
            BitrixUser.app_instance_id == instance_id, BitrixUser.extension == extension, BitrixUser.active.is_(True)
        )
    )


async def extension_for_user(session: AsyncSession, instance_id: int, user_id: int) -> str | None:
    return await session.scalar(
        select(BitrixUser.extension).where(BitrixUser.app_instance_id == instance_id, BitrixUser.user_id == user_id)
    )


async def list_users(session: AsyncSession, instance_id: int) -> list[dict[str, Any]]:
    rows = (
        await session.scalars(
            select(BitrixUser).where(BitrixUser.app_instance_id == instance_id).order_by(BitrixUser.user_id)
        )
    ).all()
    return [
        {
            "user_id": r.user_id,
            "name": r.name,
            "extension": r.extension,
            "active": r.active,
            "synced_at": r.synced_at.isoformat(),
        }
        for r in rows
    ]
