"""The 24-hour customer service window: WhatsApp takes free-form messages from a business only
within 24 hours of the customer's last message; after that only an approved template goes
(meta-whatsapp-cloud-api.md §4; Meta's 131047 otherwise, usually as a `failed` status webhook).

The rules are pure (open?, closes when?, which notice is due?); `Windows` keeps one row per chat
(opened by each customer message, in the inbound transaction) and `scan(now)` posts the
"closes soon" and "closed" notices once per opening. The clock is an argument, never read here,
so tests move it instead of waiting."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.features.messaging.models import MessagingWindow
from thoth_pbx.features.messaging.notices import enqueue_notice
from thoth_pbx.features.messaging.template_command import SYNTAX
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

ChainOf = Callable[[int, int, str], str]  # (instance, line, customer) -> the chat's outbox chain

WINDOW = dt.timedelta(hours=24)
FUTURE_SLACK = dt.timedelta(minutes=5)  # a customer's clock ahead of ours does not open a longer window

CLOSED_TEXT = (
    "Not sent to WhatsApp: more than 24 hours have passed since the customer last wrote, so WhatsApp "
    f"accepts only an approved template now. Send one as {SYNTAX}, e.g. template-hello_world+en_US. "
    "The chat opens again for free text when the customer answers."
)


def closes_at(last_inbound: dt.datetime) -> dt.datetime:
    return last_inbound + WINDOW


def is_open(last_inbound: dt.datetime | None, now: dt.datetime) -> bool:
    return last_inbound is not None and now < closes_at(last_inbound)


def opened_at(meta_timestamp: str | int | None, received: dt.datetime) -> dt.datetime:
    """When the customer's message opened the window: Meta's timestamp (the customer's send
    time), never later than we received it plus a little, the receipt time when Meta gave none."""
    try:
        sent = dt.datetime.fromtimestamp(int(str(meta_timestamp)), dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return received
    return min(sent, received + FUTURE_SLACK)


def due_notice(
    last_inbound: dt.datetime,
    now: dt.datetime,
    lead: dt.timedelta,
    closing_sent_for: dt.datetime | None,
    closed_sent_for: dt.datetime | None,
) -> str | None:
    """'closed', 'closing' or None: the one notice this opening still owes the chat now (a scan
    that comes late sends only 'closed'; `lead` of zero means no 'closing' notice)."""
    if now >= closes_at(last_inbound):
        return "closed" if closed_sent_for != last_inbound else None
    if lead > dt.timedelta(0) and now >= closes_at(last_inbound) - lead and closing_sent_for != last_inbound:
        return "closing"
    return None


def closing_text(closes: dt.datetime, now: dt.datetime) -> str:
    minutes = max(1, round((closes - now).total_seconds() / 60))
    left = f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"
    return (
        f"The WhatsApp 24-hour window of this chat closes in {left} (at {closes:%Y-%m-%d %H:%M} UTC). After that "
        "only an approved template can be sent until the customer writes again."
    )


def closed_text(closed: dt.datetime) -> str:
    return (
        f"The WhatsApp 24-hour window of this chat closed at {closed:%Y-%m-%d %H:%M} UTC: free text will not be "
        f"sent until the customer writes again. To write first, send a template: {SYNTAX}."
    )


async def _window(session: AsyncSession, phone_id: int, customer: str) -> MessagingWindow | None:
    return await session.scalar(
        select(MessagingWindow).where(MessagingWindow.phone_id == phone_id, MessagingWindow.customer == customer)
    )


class Windows:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, *, notice_before: dt.timedelta
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self.notice_before = notice_before

    @staticmethod
    async def opened(
        session: AsyncSession,
        *,
        phone_id: int,
        customer: str,
        at: dt.datetime,
        instance_id: int | None,
        line_id: int | None,
    ) -> None:
        """A customer message (in the caller's transaction): the window runs from `at`."""
        row = await _window(session, phone_id, customer)
        if row is None:
            try:
                async with session.begin_nested():  # another transaction may open it at the same moment
                    session.add(
                        MessagingWindow(
                            phone_id=phone_id,
                            customer=customer,
                            app_instance_id=instance_id,
                            line_id=line_id,
                            last_inbound_at=at,
                        )
                    )
                return
            except IntegrityError:
                row = await _window(session, phone_id, customer)
                assert row is not None
        if at > row.last_inbound_at:
            row.last_inbound_at = at
        row.app_instance_id, row.line_id = instance_id, line_id if line_id is not None else row.line_id

    @staticmethod
    async def chat_known(session: AsyncSession, phone_id: int, customer: str, im_chat_id: str | None) -> None:
        """The Open Lines chat the window's notices go to (known once Bitrix24 took a message)."""
        if not im_chat_id:
            return
        row = await _window(session, phone_id, customer)
        if row is not None and row.im_chat_id != im_chat_id:
            row.im_chat_id = im_chat_id

    @staticmethod
    async def last_inbound(session: AsyncSession, phone_id: int, customer: str) -> dt.datetime | None:
        return await session.scalar(
            select(MessagingWindow.last_inbound_at).where(
                MessagingWindow.phone_id == phone_id, MessagingWindow.customer == customer
            )
        )

    async def scan(self, now: dt.datetime, chain_of: ChainOf) -> int:
        """Post the notices due at `now`, once each (the row and the notice job in one commit)."""
        horizon = now - WINDOW + max(self.notice_before, dt.timedelta(0))
        posted = 0
        async with self._sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(MessagingWindow)
                    .where(
                        MessagingWindow.last_inbound_at <= horizon,
                        or_(
                            MessagingWindow.closed_notice_for.is_(None),
                            MessagingWindow.closed_notice_for != MessagingWindow.last_inbound_at,
                        ),
                    )
                    .order_by(MessagingWindow.id)
                    .limit(500)
                )
            ).all()
            for row in rows:
                due = due_notice(
                    row.last_inbound_at, now, self.notice_before, row.closing_notice_for, row.closed_notice_for
                )
                if due is None:
                    continue
                if due == "closed":
                    row.closed_notice_for = row.last_inbound_at
                    text = closed_text(closes_at(row.last_inbound_at))
                else:
                    row.closing_notice_for = row.last_inbound_at
                    text = closing_text(closes_at(row.last_inbound_at), now)
                if row.app_instance_id is None or not row.im_chat_id:
                    continue  # no chat to tell yet: marked, so it is not tried every scan
                chain = chain_of(row.app_instance_id, row.line_id or 0, row.customer)
                if await enqueue_notice(session, self._outbox, row.app_instance_id, chain, row.im_chat_id, text):
                    posted += 1
        return posted
