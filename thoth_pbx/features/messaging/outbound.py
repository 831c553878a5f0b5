"""Bitrix24 -> WhatsApp: what an operator writes in the number's Open Lines chat
(ONIMCONNECTORMESSAGEADD) goes to the customer through the Graph API, in order per chat.

Each operator message becomes its parts, one `messaging_message` row and one outbox job each:
the text (BB-code turned into WhatsApp formatting, a quoted customer message sent as a WhatsApp
reply), then each file (type chosen by MIME, Meta's size limits checked before any upload).
Sending first marks the customer's messages read on WhatsApp (Bitrix24 tells connectors
nothing when an operator reads; an answer is the proof). Sends keep the number's throughput
(`messages_per_s`) and back off per customer on Meta's pair rate (131056). A refusal by Meta is
final for that message: it is marked failed and the operator gets a notice in the chat; the
chat goes on. Edits and deletes WhatsApp cannot carry get a notice too.

Event payload (bitrix24-rest.md §2, Events): data[CONNECTOR], data[LINE],
data[MESSAGES][n][im][chat_id|message_id], [message][user_id|text|files], [chat][id]. Events
for another connector or a line that is not one of our numbers' are refused (ignored, logged)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.bucket import LeakyBucket
from thoth_pbx.clients.meta.graph import GraphClient, GraphError, GraphRateLimited, GraphUnavailable
from thoth_pbx.core.shapes import as_int, sub
from thoth_pbx.features.customers import Recipient, recipient_of
from thoth_pbx.features.directory import AppInstance, phone_and_account
from thoth_pbx.features.messaging import connector, history, template_command, window
from thoth_pbx.features.messaging.bbcode import split_quote, split_signature, to_whatsapp
from thoth_pbx.features.messaging.hints import failure_notice
from thoth_pbx.features.messaging.inbound import chat_chain
from thoth_pbx.features.messaging.models import MessagingLine, MessagingMessage
from thoth_pbx.features.messaging.notices import enqueue_notice
from thoth_pbx.features.messaging.settings import MessagingSettings
from thoth_pbx.features.messaging.sms import SmsProvider
from thoth_pbx.features.messaging.templates import Templates
from thoth_pbx.features.messaging.whatsapp_media import CAPTIONED, plan
from thoth_pbx.features.portal import BitrixEvent
from thoth_pbx.outbox.jobs import Job, Retry
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.snapshots import ChangeCounter, Snapshots
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

KIND_OUTBOUND = "meta.messaging.send"
PAIR_RATE_BACKOFF_S = 6.0  # Meta: about one message every 6 s to the same user (131056)
EDIT_NOTICE = "WhatsApp cannot change a message already sent: the customer still sees the original. Send a correction."
DELETE_NOTICE = "WhatsApp cannot take back a message already sent: the customer still sees it."


def _listed(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, dict):  # PHP-style forms decode X[0]... as a dict keyed "0", "1" ...
        raw = [raw[k] for k in sorted(raw, key=lambda k: int(k) if str(k).isdigit() else 0)]
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def _messages(data: Any) -> list[dict[str, Any]]:
    return _listed(data.get("MESSAGES") if isinstance(data, dict) else None)


def parts_of(message: dict[str, Any], *, keep_signature: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """(quoted text, parts): the text part first, then one part per file (pure)."""
    body = sub(message, "message")
    signature, rest = split_signature(str(body.get("text") or ""))
    quoted, rest = split_quote(rest)
    text = to_whatsapp(rest)
    lead = to_whatsapp(signature) if keep_signature else ""
    files = [f for f in _listed(body.get("files")) if f.get("downloadLink") or f.get("link")]
    parts: list[dict[str, Any]] = []
    if text and template_command.looks_like(text):
        parts.append({"type": "template", "command": text})  # checked against the templates by the caller
    elif text:
        parts.append({"type": "text", "text": (f"{lead}\n{text}" if lead else text)[:4096]})
    for index, file in enumerate(files):
        part: dict[str, Any] = {
            "type": "file",
            "name": str(file.get("name") or "file")[:240],
            "url": str(file.get("downloadLink") or file.get("link")),
            "mime": str(file.get("mime") or ""),
            "size": as_int(file.get("size")),
        }
        if index == 0 and not parts and lead:
            part["caption"] = lead  # a file sent alone still says who sent it
        parts.append(part)
    return quoted, parts


class Outbound:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        graph: GraphClient,
        settings: MessagingSettings,
        templates: Templates,
        sms: SmsProvider,
        *,
        lines_changed: ChangeCounter | None = None,
        numbers_changed: ChangeCounter | None = None,
        customers_changed: ChangeCounter | None = None,
    ) -> None:
        self._sessions = sessions
        self._templates = templates
        self._sms = sms
        self._outbox = outbox
        self._graph = graph
        self._settings = settings
        self._buckets: dict[int, LeakyBucket] = {}
        # read by every operator message: kept until their tables change (store/snapshots.py)
        self._lines: Snapshots[tuple[int, int], _Line | None] = Snapshots(lines_changed)
        self._senders: Snapshots[int, _Sender | None] = Snapshots(numbers_changed)
        self._recipients: Snapshots[tuple[int, str], Recipient] = Snapshots(customers_changed)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True)

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ Bitrix24 events

    async def _our_line(self, session: AsyncSession, event: BitrixEvent) -> _Line | None:
        data = event.data if isinstance(event.data, dict) else {}
        if str(data.get("CONNECTOR") or "").lower() != connector.CONNECTOR_ID:
            log.warning("operator event for another connector ignored", extra={"connector": data.get("CONNECTOR")})
            return None
        line_id = as_int(data.get("LINE")) or 0

        async def load() -> _Line | None:
            found = (
                await session.execute(
                    select(MessagingLine.phone_id).where(
                        MessagingLine.app_instance_id == event.instance_id, MessagingLine.line_id == line_id
                    )
                )
            ).first()
            return _Line(found.phone_id, line_id) if found is not None else None

        line = await self._lines.get((event.instance_id, line_id), load)
        if line is None:
            log.warning(
                "operator event on a line that is none of our numbers' ignored",
                extra={"instance": event.instance_id, "line": line_id},
            )
        return line

    async def message_added(self, session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        """ONIMCONNECTORMESSAGEADD, in the transaction that receives it: the parts and their
        send jobs are stored with the event (database work only)."""
        queued: list[int] = []
        line = await self._our_line(session, event)
        if line is None:
            return {"ignored": "not our connector or line"}
        for message in _messages(event.data):
            customer = str(sub(message, "chat").get("id") or "")
            im = sub(message, "im")
            im_chat, im_message = str(im.get("chat_id") or ""), str(im.get("message_id") or "")
            if not customer:
                continue
            if im_message and await session.scalar(
                select(MessagingMessage.id).where(
                    MessagingMessage.app_instance_id == event.instance_id,
                    MessagingMessage.im_chat_id == im_chat,
                    MessagingMessage.im_message_id == im_message,
                )
            ):
                continue  # this event was handled before
            quoted, parts = parts_of(message, keep_signature=self._settings.operator_signature)
            reply_to = await history.quoted_inbound(session, line.phone_id, customer, quoted) if quoted else None
            chain = chat_chain(event.instance_id, line.line_id, customer)
            window_open = window.is_open(await window.Windows.last_inbound(session, line.phone_id, customer), utcnow())
            notices: list[str] = []
            for index, part in enumerate(parts):
                refusal: str | None = None
                if part["type"] == "template":
                    part, refusal = await self._template_part(session, line.phone_id, part["command"])
                elif not window_open:
                    refusal = "outside the 24-hour window: only a template can be sent"
                    if window.CLOSED_TEXT not in notices:
                        notices.append(window.CLOSED_TEXT)
                if refusal is not None and part["type"] == "template":
                    notices.append(f"Template not sent: {refusal}.")
                row = MessagingMessage(
                    phone_id=line.phone_id,
                    app_instance_id=event.instance_id,
                    line_id=line.line_id,
                    customer=customer,
                    direction="out",
                    im_chat_id=im_chat or None,
                    im_message_id=im_message or None,
                    part=index,
                    kind=part["type"] if part["type"] in ("text", "template") else "file",
                    preview=history.preview(part.get("text") or part.get("rendered") or part.get("name") or ""),
                    status="queued" if refusal is None else "failed",
                    error=refusal[:1000] if refusal else None,
                )
                session.add(row)
                await session.flush()
                if refusal is not None:
                    continue  # held back: nothing goes to Meta, the operator is told below
                payload = {"row": row.id, "phone_id": line.phone_id, "to": customer, "part": part}
                if reply_to and index == 0:
                    payload["reply_to"] = reply_to
                row.job_id = await self._outbox.enqueue_in_order(
                    session, KIND_OUTBOUND, event.instance_id, chain, payload
                )
                queued.append(row.job_id)
            for text in notices:
                await enqueue_notice(session, self._outbox, event.instance_id, chain, im_chat or None, text)
        return {"queued": queued}

    async def _template_part(
        self, session: AsyncSession, phone_id: int, text: str
    ) -> tuple[dict[str, Any], str | None]:
        """(the part to send, None) or (the part as typed, why it is not sent)."""
        as_typed: dict[str, Any] = {"type": "template", "text": text}
        sender = await self._sender(session, phone_id)
        if sender is None:
            return as_typed, "the WhatsApp number of this chat no longer exists"
        try:
            command = template_command.parse(text)
        except template_command.CommandError as exc:
            return as_typed, f"{exc}; the form is {template_command.SYNTAX}"
        return await self._templates.part_for(session, sender.waba_account_id, command, text)

    async def message_changed(self, session: AsyncSession, event: BitrixEvent, notice: str) -> dict[str, Any]:
        """ONIMCONNECTORMESSAGEUPDATE / DELETE: WhatsApp cannot follow; the operator is told."""
        queued = []
        line = await self._our_line(session, event)
        if line is None:
            return {"ignored": "not our connector or line"}
        for message in _messages(event.data):
            customer = str(sub(message, "chat").get("id") or "")
            im_chat = str(sub(message, "im").get("chat_id") or "")
            chain = chat_chain(event.instance_id, line.line_id, customer)
            job = await enqueue_notice(session, self._outbox, event.instance_id, chain, im_chat or None, notice)
            if job is not None:
                queued.append(job)
        return {"queued": queued}

    # ------------------------------------------------------------------ the send job

    async def _sender(self, session: AsyncSession, phone_id: int) -> _Sender | None:
        """The number and its account's token (None: the number is gone)."""

        async def load() -> _Sender | None:
            number = await phone_and_account(session, phone_id)
            if number is None:
                return None
            phone, account = number
            return _Sender(phone.id, phone.phone_number_id, phone.waba_account_id, account.access_token)

        return await self._senders.get(phone_id, load)

    def _bucket(self, phone_id: int) -> LeakyBucket:
        rate = self._settings.messages_per_s
        bucket = self._buckets.get(phone_id)
        if bucket is None:
            bucket = self._buckets[phone_id] = LeakyBucket(rate, rate, headroom=0)
        return bucket

    async def _mark_read(self, phone: _Sender, unread: MessagingMessage | None) -> int | None:
        """Mark the customer's latest message read (best effort: never holds the send)."""
        if unread is None or unread.wamid is None:
            return None
        try:
            await self._graph.post(
                f"{phone.phone_number_id}/messages",
                phone.token,
                {"messaging_product": "whatsapp", "status": "read", "message_id": unread.wamid},
                attempts=1,
            )
        except GraphError as exc:
            log.info("marking the customer's message read failed", extra={"code": exc.code})
            return None
        return unread.id

    async def _portal_file(self, job: Job, part: dict[str, Any]) -> bytes:
        """The operator's file, from the portal that sent the event (and from nowhere else)."""
        async with self._sessions() as session:
            instance = await session.get(AppInstance, job.instance_id or 0)
        host = urlsplit(part["url"]).hostname or ""
        allowed = {urlsplit(f"https://{instance.domain}").hostname} if instance else set()
        if instance and instance.client_endpoint:
            allowed.add(urlsplit(instance.client_endpoint).hostname)
        if host not in allowed:
            raise _Refused(f"the file link does not point at the portal ({host})")
        limit = plan(part["mime"], None).limit
        try:
            async with self._http.stream("GET", part["url"]) as response:
                if response.status_code >= 500:
                    raise Retry(f"the portal answered HTTP {response.status_code} for the file")
                if not response.is_success:
                    raise _Refused(f"the portal answered HTTP {response.status_code} for the file")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(plan(part["mime"], size).refusal or "the file is too large")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise Retry(f"downloading the operator's file failed: {type(exc).__name__}") from None
        return b"".join(chunks)

    async def _body(self, job: Job, phone: _Sender, recipient: Recipient) -> dict[str, Any]:
        part = job.payload["part"]
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            **recipient.fields(),
        }
        if job.payload.get("reply_to"):
            body["context"] = {"message_id": job.payload["reply_to"]}
        if part["type"] == "text":
            return body | {"type": "text", "text": {"preview_url": False, "body": part["text"]}}
        if part["type"] == "template":
            return body | {"type": "template", "template": part["template"]}
        media_plan = plan(part["mime"], part.get("size"))
        if media_plan.kind is None:
            raise _Refused(media_plan.refusal or "WhatsApp does not accept this file")
        data = await self._portal_file(job, part)
        uploaded = await self._graph.upload(
            f"{phone.phone_number_id}/media",
            phone.token,
            {"messaging_product": "whatsapp", "type": part["mime"]},
            (part["name"], data, part["mime"]),
        )
        media: dict[str, Any] = {"id": uploaded.get("id")}
        if part.get("caption") and media_plan.kind in CAPTIONED:
            media["caption"] = part["caption"][:1024]
        if media_plan.kind == "document":
            media["filename"] = part["name"]
        return body | {"type": media_plan.kind, media_plan.kind: media}

    async def run(self, job: Job) -> dict[str, Any]:
        to = str(job.payload["to"])
        async with self._sessions() as session:  # one session for all the send needs
            phone = await self._sender(session, int(job.payload["phone_id"]))
            if phone is None:
                return {"failed": None, "error": "the WhatsApp number of this chat no longer exists"}
            unread = await history.unread_inbound(session, phone.phone_id, to)
            # the chat's customer as they are now (a number change moved them on: kept until
            # a customer row changes)
            recipient = await self._recipients.get(
                (phone.waba_account_id, to), lambda: recipient_of(session, phone.waba_account_id, to)
            )
        # the read receipt goes beside the send, not before it: it never delays the message
        marking = asyncio.create_task(self._mark_read(phone, unread)) if unread is not None else None
        try:
            result = await self._send(job, phone, recipient)
        except BaseException:
            if marking is not None:
                marking.cancel()  # the message goes again later; so does the receipt
            raise
        result["read_up_to"] = await marking if marking is not None else None
        return result

    async def _send(self, job: Job, phone: _Sender, recipient: Recipient) -> dict[str, Any]:
        try:
            body = await self._body(job, phone, recipient)
            await self._bucket(phone.phone_id).acquire()
            answer = await self._graph.post(f"{phone.phone_number_id}/messages", phone.token, body, attempts=1)
        except _Refused as exc:
            return {"failed": None, "error": str(exc)}
        except GraphError as exc:
            if exc.code == 131056:
                raise Retry(str(exc), after=exc.retry_after or PAIR_RATE_BACKOFF_S) from None
            if exc.is_transient or isinstance(exc, (GraphRateLimited, GraphUnavailable)):
                # a send that timed out may have reached Meta: flagged, so a repeat is known as one
                raise Retry(
                    str(exc), after=exc.retry_after, maybe_delivered=isinstance(exc, GraphUnavailable)
                ) from None
            title = exc.details or exc.message
            return {"failed": exc.code, "error": f"({exc.code}) {title}"[:1000]}
        sent = answer.get("messages")
        wamid = sent[0].get("id") if isinstance(sent, list) and sent and isinstance(sent[0], dict) else None
        return {"wamid": wamid}

    async def on_done(self, session: AsyncSession, job: OutboxJob, result: dict[str, Any] | None) -> None:
        """In the job's own commit: the wamid (for statuses), or the failure and its notice."""
        row = await session.get(MessagingMessage, int(job.payload.get("row") or 0))
        if row is None or result is None:
            return
        if result.get("read_up_to"):
            await history.mark_inbound_read(session, row.phone_id, row.customer, int(result["read_up_to"]))
        sms_id = job.payload.get("sms")
        if result.get("wamid"):
            row.wamid = str(result["wamid"])
            if history.moves_forward(row.status, "sent"):
                row.status = "sent"
            if isinstance(sms_id, int):
                await self._sms.send_done(session, sms_id, row)
            rendered = (job.payload.get("part") or {}).get("rendered")
            if rendered:  # the operator sees what the customer got, values filled in
                text = f"Sent to WhatsApp as a template:\n{rendered}"
                await enqueue_notice(
                    session, self._outbox, int(job.app_instance_id or 0), job.chain, row.im_chat_id, text
                )
            return
        code = result.get("failed") if isinstance(result.get("failed"), int) else None
        row.status, row.error_code, row.error = "failed", code, str(result.get("error") or "")[:1000]
        if isinstance(sms_id, int):
            await self._sms.send_done(session, sms_id, row)
        what = "The message was not sent" if code is not None else "The message was not sent to WhatsApp"
        text = failure_notice(code, str(result.get("error") or ""), what=what)
        await enqueue_notice(session, self._outbox, int(job.app_instance_id or 0), job.chain, row.im_chat_id, text)


@dataclass(frozen=True)
class _Line:
    """Our Open Line of an operator event: the number it belongs to."""

    phone_id: int
    line_id: int


@dataclass(frozen=True)
class _Sender:
    """A number as its sends need it: ids and its account's (decrypted) token."""

    phone_id: int
    phone_number_id: str
    waba_account_id: int
    token: str


class _Refused(Exception):
    """This message cannot go to WhatsApp as it is (type, size, link): final, told to the operator."""
