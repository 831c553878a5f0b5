"""Meta's delivery statuses of what operators sent, reported to Bitrix24.

`delivered` and `read` webhooks become `imconnector.send.status.delivery` / `.reading` with the
operator message's im ids and our wamid as an array (bitrix24-rest.md §2); Bitrix24 shows a
message as delivered only then, never because the Graph API merely accepted the send. `failed`
marks the message failed and puts Meta's code and a hint in the operator's chat (notices.py).

Meta posts every status on its own; the inbox hands a dispatch pass's statuses over together
(InboxDispatcher.subscribe_batch), so they are stored as one job per Open Line, in one
transaction, and reported to Bitrix24 with one call per method (MESSAGES is an array): at 50
operator messages a second this was most of the service's work when each status was a job
of its own (docs/benchmarks-messages.md). The line's jobs run in order on a chain of their own.
A status may arrive before the send job stored its wamid (Meta answers fast): that one becomes
a job of its own on the chat's chain, behind the send, so it always finds the message. Meta
promises no order; a status never moves a message backwards (history.moves_forward), and
Bitrix24 is told each step once per job (a repeat across jobs is harmless: it only marks)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
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

    async def on_statuses(self, items: list[InboxItem]) -> None:
        """Inbox batch handler for message `status` events: one transaction for all of them."""
        wanted = [(item, _entry(item)) for item in items]
        known = [(item, entry) for item, entry in wanted if entry is not None and item.phone is not None]
        if not known:
            return
        async with self._sessions() as session, session.begin():
            rows = await history.by_wamids(session, {str(entry["wamid"]) for _, entry in known})
            per_line: dict[tuple[int, int], list[dict[str, Any]]] = {}
            for item, entry in known:
                assert item.phone is not None and item.phone.app_instance_id is not None
                instance = item.phone.app_instance_id
                sent = rows.get(str(entry["wamid"]))
                if sent is not None and sent.app_instance_id == instance:
                    # its send stored the wamid: reported with the line's other statuses
                    per_line.setdefault((instance, sent.line_id or 0), []).append(entry)
                    continue
                status = item.model
                assert isinstance(status, Status)
                bsuid = str(status.extra.get("recipient_user_id") or "") or None
                who = await find(session, item.phone.waba_account_id, bsuid=bsuid, phone=status.recipient_id)
                # the chat's chain, so the status runs behind the send it reports on
                customer = who.chat_key if who is not None else (status.recipient_id or bsuid or "")
                line = await line_of(session, item.phone.id)
                chain = chat_chain(instance, (line.line_id if line else None) or 0, customer)
                await self._outbox.enqueue_in_order(session, KIND_STATUS, instance, chain, {"statuses": [entry]})
            for (instance, line_id), entries in per_line.items():
                # started by its commit when the line's previous statuses are done (no claim round)
                await self._outbox.enqueue_in_order(
                    session, KIND_STATUS, instance, status_chain(instance, line_id), {"statuses": entries}
                )

    async def run(self, job: Job) -> dict[str, Any]:
        entries = _entries(job.payload)
        async with self._sessions() as session:
            rows = await history.by_wamids(session, {str(e["wamid"]) for e in entries})
        ranks: dict[int, int] = {}  # what this job has told so far, per message
        calls: dict[tuple[str, int], list[dict[str, Any]]] = {}
        updates: list[list[Any]] = []
        unknown: list[str] = []
        for index, entry in enumerate(entries):
            new, row = str(entry["status"]), rows.get(str(entry["wamid"]))
            if row is None or row.direction != "out":
                unknown.append(str(entry["wamid"]))  # sent by something else than this bridge
                continue
            updates.append([row.id, new, index])
            if not (row.im_chat_id and row.im_message_id and row.line_id):
                continue
            told = ranks.get(row.id, history.RANK.get(row.status, 0))
            report: dict[str, Any] = {
                "im": {"chat_id": row.im_chat_id, "message_id": row.im_message_id},
                "message": {"id": [row.wamid]},
                "chat": {"id": row.customer},
            }
            if str(entry.get("timestamp") or "").isdigit():
                report["message"]["date"] = int(entry["timestamp"])
            if new in ("delivered", "read") and told < history.RANK["delivered"]:
                calls.setdefault(("imconnector.send.status.delivery", row.line_id), []).append(report)
            if new == "read" and told < history.RANK["read"]:
                calls.setdefault(("imconnector.send.status.reading", row.line_id), []).append(report)
            ranks[row.id] = max(told, history.RANK.get(new, 0))
        told_methods = []
        if calls:
            client = await self._portals.client(job_instance(job))
            # delivery before reading: a message read is a message delivered
            for method, line_id in sorted(calls, key=lambda key: key[0] != "imconnector.send.status.delivery"):
                params = {"CONNECTOR": connector.CONNECTOR_ID, "LINE": line_id, "MESSAGES": calls[method, line_id]}
                await client.call(method, params)
                told_methods.append(method)
        return {"updates": updates, "told": told_methods, "unknown": unknown}

    async def on_done(self, session: AsyncSession, job: OutboxJob, result: dict[str, Any] | None) -> None:
        if not result:
            return
        entries = _entries(job.payload)
        if "row" in result:  # a job of the previous shape, done just before an upgrade
            updates = [[result["row"], str(job.payload["status"]), 0]]
        else:
            updates = list(result.get("updates") or [])
        if not updates:
            return
        rows = {
            row.id: row
            for row in (
                await session.scalars(
                    select(MessagingMessage).where(MessagingMessage.id.in_({int(u[0]) for u in updates}))
                )
            ).all()
        }
        for row_id, new, index in updates:
            row = rows.get(int(row_id))
            if row is None or not history.moves_forward(row.status, str(new)):
                continue
            row.status = str(new)
            first: dict[str, Any] = {}
            if new == "failed":
                first = (entries[int(index)].get("errors") or [{}])[0]
                row.error_code = first.get("code") if isinstance(first.get("code"), int) else None
                row.error = str(first.get("details") or first.get("message") or first.get("title") or "failed")[:1000]
            if row.im_chat_id is None:
                await self._sms.status_changed(session, row)  # an SMS from the CRM: the portal wants its status
            elif new == "failed":
                text = failure_notice(row.error_code, first.get("title"))
                chain = chat_chain(row.app_instance_id or int(job.app_instance_id or 0), row.line_id or 0, row.customer)
                await enqueue_notice(session, self._outbox, int(job.app_instance_id or 0), chain, row.im_chat_id, text)


def status_chain(instance_id: int, line_id: int) -> str:
    """The order of an Open Line's status jobs (each reports several chats' statuses)."""
    return f"wa-status:{instance_id}:{line_id}"


def _entry(item: InboxItem) -> dict[str, Any] | None:
    """What a status job needs of a `status` event (None: nothing to report)."""
    status = item.model
    if not isinstance(status, Status) or not status.id or status.status not in _KNOWN:
        return None
    if item.phone is None or item.phone.app_instance_id is None:
        return None
    errors = [{"code": e.code, "title": e.title, "message": e.message, "details": e.details} for e in status.errors]
    return {"wamid": status.id, "status": status.status, "timestamp": status.timestamp, "errors": errors}


def _entries(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's statuses: `statuses`, or the single status of a job stored before they were batched."""
    listed = payload.get("statuses")
    if isinstance(listed, list):
        return [e for e in listed if isinstance(e, dict)]
    return [payload]
