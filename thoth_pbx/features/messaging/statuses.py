"""Meta's delivery statuses of what operators sent, reported to Bitrix24.

`delivered` and `read` webhooks become `imconnector.send.status.delivery` / `.reading` with the
operator message's im ids and our wamid as an array (bitrix24-rest.md §2); Bitrix24 shows a
message as delivered only then, never because the Graph API merely accepted the send. `failed`
marks the message failed and puts Meta's code and a hint in the operator's chat (notices.py).

A status may arrive before the send job stored its wamid (Meta answers fast): the status job
sits on the chat's chain, behind the send, so it always finds the message. Meta promises no
order; a status never moves a message backwards (history.moves_forward)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.clients.meta.payloads import Status
from thoth_pbx.features.customers import find
from thoth_pbx.features.messaging import connector, history
from thoth_pbx.features.messaging.hints import failure_notice
from thoth_pbx.features.messaging.inbound import chat_chain
from thoth_pbx.features.messaging.models import MessagingMessage, line_of
from thoth_pbx.features.messaging.notices import enqueue_notice
from thoth_pbx.features.messaging.sms import SmsProvider
from thoth_pbx.features.portal import Portals, job_instance
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_STATUS = "bitrix.messaging.status"
# `sent` needs no job: the send job's own commit marks the message sent, and Bitrix24 hears of
# nothing before `delivered`
_KNOWN = ("delivered", "read", "failed")


class Statuses:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, portals: Portals, sms: SmsProvider
    ) -> None:
        self._sessions = sessions
        self._sms = sms
        self._outbox = outbox
        self._portals = portals

    async def on_status(self, item: InboxItem) -> None:
        """Inbox handler for message `status` events."""
        status = item.model
        if not isinstance(status, Status) or not status.id or status.status not in _KNOWN:
            return
        if item.phone is None or item.phone.app_instance_id is None:
            return
        bsuid = str(status.extra.get("recipient_user_id") or "") or None
        errors = [{"code": e.code, "title": e.title, "message": e.message, "details": e.details} for e in status.errors]
        async with self._sessions() as session, session.begin():
            sent = await history.by_wamid(session, status.id)
            if sent is not None and sent.app_instance_id == item.phone.app_instance_id:
                # the send stored its wamid: the chat's chain as the message row has it (one read
                # instead of the customer's and the line's, for every status of every message)
                chain = chat_chain(sent.app_instance_id, sent.line_id or 0, sent.customer)
            else:
                who = await find(session, item.phone.waba_account_id, bsuid=bsuid, phone=status.recipient_id)
                # the chat's chain, so the status runs behind the send it reports on
                customer = who.chat_key if who is not None else (status.recipient_id or bsuid or "")
                line = await line_of(session, item.phone.id)
                chain = chat_chain(item.phone.app_instance_id, (line.line_id if line else None) or 0, customer)
            payload = {"wamid": status.id, "status": status.status, "timestamp": status.timestamp, "errors": errors}
            # started by its commit when the chat has nothing unfinished (no claim round)
            await self._outbox.enqueue_in_order(session, KIND_STATUS, item.phone.app_instance_id, chain, payload)

    async def run(self, job: Job) -> dict[str, Any]:
        new = str(job.payload["status"])
        async with self._sessions() as session:
            row = await history.by_wamid(session, str(job.payload["wamid"]))
        if row is None or row.direction != "out":
            return {"unknown": job.payload["wamid"]}  # sent by something else than this bridge
        told = []
        if row.im_chat_id and row.im_message_id and row.line_id:
            old_rank = history.RANK.get(row.status, 0)
            methods = []
            if new in ("delivered", "read") and old_rank < history.RANK["delivered"]:
                methods.append("imconnector.send.status.delivery")
            if new == "read" and old_rank < history.RANK["read"]:
                methods.append("imconnector.send.status.reading")
            if methods:
                client = await self._portals.client(job_instance(job))
                entry: dict[str, Any] = {
                    "im": {"chat_id": row.im_chat_id, "message_id": row.im_message_id},
                    "message": {"id": [row.wamid]},
                    "chat": {"id": row.customer},
                }
                if str(job.payload.get("timestamp") or "").isdigit():
                    entry["message"]["date"] = int(job.payload["timestamp"])
                for method in methods:
                    await client.call(
                        method, {"CONNECTOR": connector.CONNECTOR_ID, "LINE": row.line_id, "MESSAGES": [entry]}
                    )
                    told.append(method)
        return {"row": row.id, "status": new, "told": told}

    async def on_done(self, session: AsyncSession, job: OutboxJob, result: dict[str, Any] | None) -> None:
        if not result or "row" not in result:
            return
        row = await session.get(MessagingMessage, int(result["row"]))
        new = str(job.payload["status"])
        if row is None or not history.moves_forward(row.status, new):
            return
        row.status = new
        first: dict[str, Any] = {}
        if new == "failed":
            first = (job.payload.get("errors") or [{}])[0]
            row.error_code = first.get("code") if isinstance(first.get("code"), int) else None
            row.error = str(first.get("details") or first.get("message") or first.get("title") or "failed")[:1000]
        if row.im_chat_id is None:
            await self._sms.status_changed(session, row)  # an SMS from the CRM: the portal wants its status
        elif new == "failed":
            text = failure_notice(row.error_code, first.get("title"))
            await enqueue_notice(session, self._outbox, int(job.app_instance_id or 0), job.chain, row.im_chat_id, text)
