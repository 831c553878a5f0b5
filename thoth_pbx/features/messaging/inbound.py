"""WhatsApp -> Bitrix24: each inbound message from the durable webhook inbox becomes one
`imconnector.send.messages` entry on the number's Open Line, exactly once and in order per chat.

The inbox dispatcher hands over stored `message` events (already deduplicated by wamid); the
handler records the message (`messaging_message`, unique wamid) and enqueues the job in one
transaction, so an event dispatched again (a crash before the inbox marked it processed) is a
no-op. Jobs of one customer's chat share a chain, so the outbox keeps their order; the Bitrix
client batches them within the portal's rate limit. A media message first fetches its file
from Meta (media.py); a Graph failure retries the job (never dropping it), and after
MEDIA_ATTEMPTS the message goes on without the file, saying so, so the chat is not held."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.merging import SEND_MESSAGES
from thoth_pbx.clients.meta.graph import GraphError, MediaTooLarge
from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.clients.meta.payloads import Message, contacts_of
from thoth_pbx.core.shapes import sub
from thoth_pbx.features.customers import Customer, identify, number_changed
from thoth_pbx.features.directory import phone_and_account
from thoth_pbx.features.messaging import connector, history
from thoth_pbx.features.messaging.crm_link import enqueue_crm_link
from thoth_pbx.features.messaging.inbound_render import Sender, entry, media_of, quoted_ids, sender_of
from thoth_pbx.features.messaging.media import MediaChanged, MediaStore
from thoth_pbx.features.messaging.models import MessagingMessage, line_of
from thoth_pbx.features.messaging.window import Windows, opened_at
from thoth_pbx.features.portal import Portals, job_instance
from thoth_pbx.outbox.jobs import Fail, Job, Retry
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_INBOUND = "bitrix.messaging.inbound"
NOT_READY_RETRY_S = 30.0
MEDIA_ATTEMPTS = 8  # then the message goes on without its file (the chat must not stay blocked)


def chat_chain(instance_id: int, line_id: int, customer: str) -> str:
    return f"wa-chat:{instance_id}:{line_id}:{customer}"[:128]


_CHANGED = {"user_changed_number", "customer_changed_number", "user_changed_user_id", "customer_identity_changed"}


async def _who(session: AsyncSession, account_id: int, message: Message, sender: Sender) -> Customer:
    """The customer behind a message; a system message saying they changed their number (a
    new BSUID) moves their identity on, keeping the chat (Meta: webhooks/reference/messages/system)."""
    system = message.content if message.type == "system" and isinstance(message.content, dict) else {}
    if str(system.get("type") or "") in _CHANGED:
        new_phone = system.get("wa_id") or system.get("new_wa_id")
        new_bsuid = system.get("user_id") or system.get("new_user_id")
        moved = await number_changed(
            session,
            account_id,
            old_bsuid=sender.bsuid,
            old_phone=sender.phone,
            new_bsuid=str(new_bsuid) if new_bsuid else None,
            new_phone=str(new_phone) if new_phone else None,
        )
        if moved is not None:
            return moved
    return await identify(
        session, account_id, bsuid=sender.bsuid, phone=sender.phone, username=sender.username, name=sender.name
    )


class Inbound:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, portals: Portals, media: MediaStore
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._portals = portals
        self._media = media

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
        sender = sender_of(message, contacts[0] if contacts else None)
        instance_id = item.phone.app_instance_id
        async with self._sessions() as session:
            try:
                async with session.begin():
                    who = await _who(session, item.phone.waba_account_id, message, sender)
                    customer = who.chat_key
                    line = await line_of(session, item.phone.id)
                    line_id = line.line_id if line is not None else None
                    quotes = {}
                    for wamid in quoted_ids(message):
                        quoted = await history.by_wamid(session, wamid)
                        if quoted is not None and quoted.preview:
                            quotes[wamid] = quoted.preview[:80]
                    rendered = entry(message, sender, customer, quotes)
                    record = MessagingMessage(
                        phone_id=item.phone.id,
                        app_instance_id=instance_id,
                        line_id=line_id,
                        customer=customer,
                        direction="in",
                        wamid=message.id,
                        kind=message.type or "unknown",
                        preview=history.preview(rendered["message"]["text"]),
                        status="received",
                    )
                    session.add(record)
                    await session.flush()  # the unique wamid: a second dispatch stops here
                    await Windows.opened(
                        session,
                        phone_id=item.phone.id,
                        customer=customer,
                        at=opened_at(message.timestamp, item.received_at),
                        instance_id=instance_id,
                        line_id=line_id,
                    )
                    payload = {
                        "phone_id": item.phone.id,
                        "row": record.id,
                        "customer_id": who.id,
                        "entry": rendered,
                        "media": media_of(message),
                    }
                    chain = chat_chain(instance_id, line_id or 0, customer)
                    record.job_id = await self._outbox.enqueue_in_order(
                        session, KIND_INBOUND, instance_id, chain, payload
                    )
            except IntegrityError:
                log.info("whatsapp message already handed to Bitrix24", extra={"wamid": message.id})

    async def _with_file(self, job: Job, message: dict[str, Any]) -> dict[str, Any]:
        media = job.payload.get("media")
        if not isinstance(media, dict):
            return message
        async with self._sessions() as session:
            number = await phone_and_account(session, int(job.payload["phone_id"]))
        if number is None:
            return message | {"text": message["text"] + " (the file could not be fetched: the number is gone)"}
        _, account = number
        try:
            stored = await self._media.fetch(
                str(message["id"]), str(media["id"]), account.access_token, name=media.get("name"), kind=media["kind"]
            )
        except MediaTooLarge:
            cap = self._media.max_bytes // (1024 * 1024)
            return message | {"text": message["text"] + f" (the file is larger than {cap} MB and was not brought over)"}
        except (GraphError, MediaChanged) as exc:
            if job.attempt < MEDIA_ATTEMPTS:
                raise Retry(f"fetching the WhatsApp media failed: {exc}") from None
            log.warning("whatsapp media given up", extra={"wamid": message["id"], "error": str(exc)})
            return message | {"text": message["text"] + " (the file could not be fetched from WhatsApp)"}
        return message | {"files": [{"url": self._media.link(stored), "name": stored.name}]}

    async def run(self, job: Job) -> dict[str, Any]:
        instance_id = job_instance(job)
        async with self._sessions() as session:
            line = await line_of(session, int(job.payload["phone_id"]))
        if line is None or line.line_id is None or line.state != "green" or line.app_instance_id != instance_id:
            # the line is being set up (or repaired): wait for it rather than drop the message
            state = line.state if line else "not set up"
            raise Retry(f"the Open Line of this number is {state}", after=NOT_READY_RETRY_S)
        item = dict(job.payload["entry"])
        item["message"] = await self._with_file(job, dict(item["message"]))
        client = await self._portals.client(instance_id)
        answer = await client.call(
            "imconnector.send.messages",
            {"CONNECTOR": connector.CONNECTOR_ID, "LINE": line.line_id, "MESSAGES": [item]},
            merge=SEND_MESSAGES,  # a backlog's messages share commands: more than 50 per request
        )
        results = ((answer or {}).get("DATA") or {}).get("RESULT") if isinstance(answer, dict) else None
        first = results[0] if isinstance(results, list) and results else {}
        if not isinstance(answer, dict) or not answer.get("SUCCESS") or not first.get("SUCCESS", True):
            raise Fail(f"imconnector.send.messages refused the message: {answer!r}"[:500])
        session_info = sub(first, "session")
        return {
            "line": line.line_id,
            "chat_id": session_info.get("CHAT_ID"),
            "bitrix_user": first.get("user"),
            "files": len(item["message"].get("files") or []),
        }

    async def on_done(self, session: AsyncSession, job: OutboxJob, result: dict[str, Any] | None) -> None:
        """In the job's own commit: the message is in Bitrix24, in which Open Lines chat (and,
        for a customer without a CRM link, a question for the chat's CRM binding)."""
        row = await session.get(MessagingMessage, int(job.payload.get("row") or 0))
        if row is None or result is None:
            return
        row.line_id = result.get("line")
        chat_id = result.get("chat_id")
        row.im_chat_id = str(chat_id) if chat_id not in (None, "") else row.im_chat_id
        if history.moves_forward(row.status, "in_bitrix"):
            row.status = "in_bitrix"
        await Windows.chat_known(session, row.phone_id, row.customer, row.im_chat_id)
        if row.im_chat_id and job.app_instance_id is not None:  # which CRM entity Bitrix24 bound the chat to
            customer_id = job.payload.get("customer_id")
            await enqueue_crm_link(
                session, self._outbox, job.app_instance_id, int(customer_id) if customer_id else None, row.im_chat_id
            )
