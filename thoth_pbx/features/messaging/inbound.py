"""WhatsApp -> Bitrix24: each inbound message from the durable webhook inbox becomes one
`imconnector.send.messages` entry on the number's Open Line, exactly once and in order per chat.

The inbox dispatcher hands over stored `message` events (already deduplicated by wamid); the
handler records the wamid and enqueues the job in one transaction, so an event dispatched again
(a crash before the inbox marked it processed) is a no-op. Jobs of one customer's chat share a
chain, so the outbox keeps their order; the Bitrix client batches them within the portal's
rate limit."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.clients.meta.payloads import Message, contacts_of
from thoth_pbx.core.shapes import sub
from thoth_pbx.features.messaging import connector
from thoth_pbx.features.messaging.inbound_render import customer_key, entry
from thoth_pbx.features.messaging.models import MessagingInbound, MessagingLine
from thoth_pbx.features.portal import Portals, job_instance
from thoth_pbx.outbox.jobs import Fail, Job, Retry
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_INBOUND = "bitrix.messaging.inbound"
NOT_READY_RETRY_S = 30.0


def chat_chain(instance_id: int, line_id: int, customer: str) -> str:
    return f"wa-chat:{instance_id}:{line_id}:{customer}"[:128]


class Inbound:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, portals: Portals) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._portals = portals

    async def on_message(self, item: InboxItem) -> None:
        """Inbox handler for `message` events."""
        message = item.model
        if not isinstance(message, Message) or not message.id:
            return
        if item.phone is None or item.phone.app_instance_id is None:
            log.info(
                "whatsapp message for a number not linked to a portal: kept in the inbox only",
                extra={"inbox_id": item.id},
            )
            return
        contacts = contacts_of(item.payload)
        contact = contacts[0] if contacts else None
        instance_id = item.phone.app_instance_id
        async with self._sessions() as session:
            try:
                async with session.begin():
                    line = await session.scalar(select(MessagingLine).where(MessagingLine.phone_id == item.phone.id))
                    line_id = line.line_id if line is not None else None
                    record = MessagingInbound(wamid=message.id, phone_id=item.phone.id)
                    session.add(record)
                    await session.flush()  # the unique wamid: a second dispatch stops here
                    payload = {"phone_id": item.phone.id, "entry": entry(message, contact)}
                    chain = chat_chain(instance_id, line_id or 0, customer_key(message, contact))
                    record.job_id = await self._outbox.enqueue(session, KIND_INBOUND, instance_id, chain, payload)
            except IntegrityError:
                log.info("whatsapp message already handed to Bitrix24", extra={"wamid": message.id})

    async def run(self, job: Job) -> dict[str, Any]:
        instance_id = job_instance(job)
        async with self._sessions() as session:
            line = await session.scalar(
                select(MessagingLine).where(MessagingLine.phone_id == int(job.payload["phone_id"]))
            )
        if line is None or line.line_id is None or line.state != "green" or line.app_instance_id != instance_id:
            # the line is being set up (or repaired): wait for it rather than drop the message
            state = line.state if line else "not set up"
            raise Retry(f"the Open Line of this number is {state}", after=NOT_READY_RETRY_S)
        client = await self._portals.client(instance_id)
        answer = await client.call(
            "imconnector.send.messages",
            {"CONNECTOR": connector.CONNECTOR_ID, "LINE": line.line_id, "MESSAGES": [job.payload["entry"]]},
        )
        results = ((answer or {}).get("DATA") or {}).get("RESULT") if isinstance(answer, dict) else None
        first = results[0] if isinstance(results, list) and results else {}
        if not isinstance(answer, dict) or not answer.get("SUCCESS") or not first.get("SUCCESS", True):
            raise Fail(f"imconnector.send.messages refused the message: {answer!r}"[:500])
        session_info = sub(first, "session")
        return {"line": line.line_id, "chat_id": session_info.get("CHAT_ID"), "bitrix_user": first.get("user")}
