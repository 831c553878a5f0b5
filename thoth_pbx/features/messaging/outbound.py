"""Bitrix24 -> WhatsApp: what an operator writes in the number's Open Lines chat
(ONIMCONNECTORMESSAGEADD) goes to the customer through the Graph API, one outbox job per
message, in order per chat. First slice: text (BB-code turned into WhatsApp formatting);
files, replies, statuses and Meta's limits come next (docs/messaging.md).

Event payload (bitrix24-rest.md §2, Events): data[CONNECTOR], data[LINE],
data[MESSAGES][n][im][chat_id|message_id], [message][user_id|text|files], [chat][id]. Events
for another connector or a line that is not one of our numbers' are refused (ignored, logged)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.graph import GraphClient, GraphError, GraphRateLimited, GraphUnavailable
from thoth_pbx.core.shapes import as_int, sub
from thoth_pbx.features.directory import Phone, WabaAccount
from thoth_pbx.features.messaging import connector
from thoth_pbx.features.messaging.bbcode import to_whatsapp
from thoth_pbx.features.messaging.inbound import chat_chain
from thoth_pbx.features.messaging.models import MessagingLine
from thoth_pbx.features.portal import BitrixEvent
from thoth_pbx.outbox.jobs import Fail, Handler, Job, Retry
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_OUTBOUND = "meta.messaging.send"


def meta_guarded(fn: Handler) -> Handler:
    """Graph errors -> outbox verdicts: what Meta marks transient (or a timeout, a 5xx, a rate
    limit) is retried, after `Retry-After` when given; anything else fails the job with Meta's
    code and message, for the admin (and, next, for the operator's chat)."""

    async def run(job: Job) -> dict[str, Any] | None:
        try:
            return await fn(job)
        except GraphError as exc:
            if exc.is_transient or isinstance(exc, (GraphRateLimited, GraphUnavailable)):
                # a send that timed out may have reached Meta: flagged, so a repeat is known as one
                raise Retry(
                    str(exc), after=exc.retry_after, maybe_delivered=isinstance(exc, GraphUnavailable)
                ) from None
            raise Fail(f"Meta refused the message: ({exc.code}) {exc.message}") from None

    run.__name__ = fn.__name__
    return run


def _messages(data: Any) -> list[dict[str, Any]]:
    raw = data.get("MESSAGES") if isinstance(data, dict) else None
    if isinstance(raw, dict):  # PHP-style forms decode MESSAGES[0]... as a dict keyed "0", "1" ...
        raw = [raw[k] for k in sorted(raw, key=lambda k: int(k) if str(k).isdigit() else 0)]
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def event_chain(event: BitrixEvent) -> str | None:
    """The operator events of one chat are handled in order (their jobs share this chain), so
    their sends are enqueued, and so sent, in the order the operator wrote."""
    data = event.data if isinstance(event.data, dict) else {}
    messages = _messages(data)
    customer = str(sub(messages[0], "chat").get("id") or "") if messages else ""
    return f"bitrix-ol:{event.instance_id}:{data.get('LINE')}:{customer}"[:128] if customer else None


class Outbound:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, graph: GraphClient) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._graph = graph

    async def on_message_add(self, event: BitrixEvent) -> dict[str, Any]:
        data = event.data if isinstance(event.data, dict) else {}
        if str(data.get("CONNECTOR") or "").lower() != connector.CONNECTOR_ID:
            log.warning("operator message for another connector ignored", extra={"connector": data.get("CONNECTOR")})
            return {"ignored": "not our connector"}
        line_id = as_int(data.get("LINE")) or 0
        queued = []
        async with self._sessions() as session, session.begin():
            line = await session.scalar(
                select(MessagingLine).where(
                    MessagingLine.app_instance_id == event.instance_id, MessagingLine.line_id == line_id
                )
            )
            if line is None:
                log.warning(
                    "operator message on a line that is none of our numbers' ignored",
                    extra={"instance": event.instance_id, "line": line_id},
                )
                return {"ignored": "unknown line"}
            for message in _messages(data):
                customer = str(sub(message, "chat").get("id") or "")
                text = to_whatsapp(str(sub(message, "message").get("text") or ""))
                if not customer or not text:
                    continue
                payload = {"phone_id": line.phone_id, "to": customer, "text": text, "im": sub(message, "im")}
                chain = chat_chain(event.instance_id, line_id, customer)
                queued.append(await self._outbox.enqueue(session, KIND_OUTBOUND, event.instance_id, chain, payload))
        return {"queued": queued}

    async def run(self, job: Job) -> dict[str, Any]:
        async with self._sessions() as session:
            phone = await session.get(Phone, int(job.payload["phone_id"]))
            account = await session.get(WabaAccount, phone.waba_account_id) if phone else None
        if phone is None or account is None:
            raise Fail("the WhatsApp number of this chat no longer exists")
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": job.payload["to"],
            "type": "text",
            "text": {"preview_url": False, "body": job.payload["text"][:4096]},
        }
        answer = await self._graph.post(f"{phone.phone_number_id}/messages", account.access_token, body)
        sent = answer.get("messages") if isinstance(answer, dict) else None
        wamid = sent[0].get("id") if isinstance(sent, list) and sent and isinstance(sent[0], dict) else None
        return {"wamid": wamid, "im": job.payload.get("im")}
