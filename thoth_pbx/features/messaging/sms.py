"""Each WhatsApp number flagged `sms_service` is a Bitrix24 SMS provider, so CRM robots and the
"send SMS" action can write the first message of the day as a WhatsApp template.

Senders (bitrix24-rest.md §3): `messageservice.sender.add` (CODE `thoth_<digits>`, TYPE SMS,
HANDLER our `POST /api/bitrix/sms`) per flagged number linked to the portal, deleted when the
flag is cleared or the number unlinked; one reconcile job per portal compares what
`messageservice.sender.list` says with what should be there, so a lost call is repaired by the
next one. Bitrix24 posts each SMS to the handler from its servers (the portal proves itself
with the application token saved at install, like events); the body is a template command
(`template-NAME+LANG...`, or `NAME+LANG...` when that template exists) or free text, which goes
only inside the 24-hour window. The message goes out through the same send job as an operator's
(outbound.py, on the chat's chain), and its fate is reported with
`messageservice.message.status.update`: sent, delivered (Meta's delivered or read),
undelivered (131026) or failed, never backwards."""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.customers import find
from thoth_pbx.features.directory import AppInstance, Phone
from thoth_pbx.features.messaging import history, template_command, templates, window
from thoth_pbx.features.messaging.inbound import chat_chain
from thoth_pbx.features.messaging.models import MessagingMessage, MessagingSms, MessagingSmsSender, line_of
from thoth_pbx.features.portal import Portals, job_instance, verified_instance
from thoth_pbx.outbox.jobs import Job
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

HANDLER_PATH = "/api/bitrix/sms"
KIND_SENDERS = "bitrix.messaging.sms_senders"
KIND_SMS_STATUS = "bitrix.messaging.sms_status"
CODE_PREFIX = "thoth_"
# Bitrix24's statuses (messageservice.message.status.update) in the order a message moves
RANK = {"received": 0, "sent": 1, "delivered": 2, "undelivered": 3, "failed": 3}
UNDELIVERABLE = {131026}
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def sender_code(number: str) -> str:
    return CODE_PREFIX + "".join(ch for ch in number if ch.isdigit())


def bitrix_status(meta_status: str, error_code: int | None = None) -> str:
    """Meta's status of the send -> what the CRM shows (pure)."""
    if meta_status in ("delivered", "read"):
        return "delivered"
    if meta_status == "failed":
        return "undelivered" if error_code in UNDELIVERABLE else "failed"
    return "sent"


def senders_chain(instance_id: int) -> str:
    return f"sms-senders:{instance_id}"


class SmsProvider:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        portals: Portals,
        templates_service: templates.Templates,
        *,
        public_url: str,
        outbound_kind: str,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._portals = portals
        self._templates = templates_service
        self._handler_url = public_url.rstrip("/") + HANDLER_PATH
        self._outbound_kind = outbound_kind

    # ------------------------------------------------------------------ senders

    async def enqueue_for_portal(self, session: AsyncSession, instance_id: int, *, reason: str) -> list[int]:
        """Portal set-up hook (install, re-authorisation) and phone changes: reconcile its
        senders, when there is anything to have or to remove there."""
        wanted, registered = await self._senders(session, instance_id)
        if not wanted and not registered:
            return []
        if reason == "phones changed" and set(wanted) == registered:
            return []
        job = await self._outbox.enqueue(
            session, KIND_SENDERS, instance_id, senders_chain(instance_id), {"reason": reason}
        )
        return [job]

    @staticmethod
    async def _senders(session: AsyncSession, instance_id: int) -> tuple[dict[str, str], set[str]]:
        """(code -> number of each flagged number linked to the portal, codes we registered there)."""
        phones = (
            await session.scalars(
                select(Phone).where(Phone.app_instance_id == instance_id, Phone.sms_service.is_(True))
            )
        ).all()
        registered = set(
            (
                await session.scalars(
                    select(MessagingSmsSender.code).where(MessagingSmsSender.app_instance_id == instance_id)
                )
            ).all()
        )
        return {sender_code(p.number): p.number for p in phones}, registered

    async def phones_changed(self) -> None:
        """A phone flagged, unflagged, linked, moved or deleted: each active portal whose senders
        differ from its flagged numbers is reconciled (there are few portals)."""
        async with self._sessions() as session, session.begin():
            ids = (await session.scalars(select(AppInstance.id).where(AppInstance.status == "active"))).all()
            for instance_id in ids:
                await self.enqueue_for_portal(session, instance_id, reason="phones changed")

    async def reconcile(self, job: Job) -> dict[str, Any]:
        instance_id = job_instance(job)
        async with self._sessions() as session:
            wanted, _ = await self._senders(session, instance_id)
        client = await self._portals.client(instance_id)
        listed = await client.call("messageservice.sender.list", batchable=False)
        have = {str(c) for c in listed} if isinstance(listed, list) else set()
        added, removed = [], []
        for code, number in sorted(wanted.items()):
            if code in have:
                continue
            try:
                await client.call(
                    "messageservice.sender.add",
                    {
                        "CODE": code,
                        "TYPE": "SMS",
                        "HANDLER": self._handler_url,
                        "NAME": f"WhatsApp {number}",
                        "DESCRIPTION": f"WhatsApp messages from {number} through thoth-pbx (templates outside 24 h)",
                    },
                )
            except BitrixLogicError as exc:
                if exc.code != "ERROR_SENDER_ALREADY_INSTALLED":
                    raise
            added.append(code)
        for code in sorted(have - set(wanted)):
            if not code.startswith(CODE_PREFIX):
                continue  # another app's or the admin's sender: not ours to remove
            try:
                await client.call("messageservice.sender.delete", {"CODE": code})
            except BitrixLogicError as exc:
                if exc.code != "ERROR_SENDER_NOT_FOUND":
                    raise
            removed.append(code)
        async with self._sessions() as session, session.begin():
            await session.execute(delete(MessagingSmsSender).where(MessagingSmsSender.app_instance_id == instance_id))
            session.add_all(MessagingSmsSender(app_instance_id=instance_id, code=code) for code in wanted)
        return {"senders": sorted(wanted), "added": added, "removed": removed}

    # ------------------------------------------------------------------ the handler

    async def receive(self, form: dict[str, Any]) -> dict[str, Any]:
        """An SMS from the CRM: verified, stored and queued in one transaction (a repeat of the
        same message_id is answered without sending twice)."""
        async with self._sessions() as session, session.begin():
            instance = await verified_instance(session, form, what="sms")
            code = _required(form, "code", 64)
            message_id = _required(form, "message_id", 64)
            if not _MESSAGE_ID.fullmatch(message_id):
                raise FieldError("message_id", "must be Bitrix24's message id (letters, digits, _.:-)")
            to = "".join(ch for ch in _required(form, "message_to", 64) if ch.isdigit())
            if not 6 <= len(to) <= 15:
                raise FieldError("message_to", "must be a phone number in international form")
            body = _required(form, "message_body", 4096)
            phone = await self._sender_phone(session, instance.id, code)
            existing = await session.scalar(
                select(MessagingSms).where(
                    MessagingSms.app_instance_id == instance.id, MessagingSms.bitrix_message_id == message_id
                )
            )
            if existing is not None:
                return {"message_id": message_id, "status": existing.status, "duplicate": True}
            known = await find(session, phone.waba_account_id, phone=to)
            chat = known.chat_key if known is not None else to  # the customer's chat, after a number change too
            sms = MessagingSms(
                app_instance_id=instance.id,
                phone_id=phone.id,
                code=code,
                bitrix_message_id=message_id,
                recipient=to,
                body=body,
                status="received",
            )
            session.add(sms)
            await session.flush()
            part, refusal = await self._part(session, phone, chat, body)
            line = await line_of(session, phone.id)
            line_id = line.line_id if line is not None and line.line_id is not None else 0
            row = MessagingMessage(
                phone_id=phone.id,
                app_instance_id=instance.id,
                line_id=line_id or None,
                customer=chat,
                direction="out",
                part=0,
                kind="template" if part["type"] == "template" else "text",
                preview=history.preview(part.get("rendered") or part.get("text") or body),
                status="queued" if refusal is None else "failed",
                error=refusal,
            )
            session.add(row)
            await session.flush()
            sms.row_id = row.id
            if refusal is not None:
                sms.status, sms.error = "failed", refusal
                await self._report(session, sms, "failed")
                return {"message_id": message_id, "status": "failed", "error": refusal}
            payload = {"row": row.id, "phone_id": phone.id, "to": chat, "part": part, "sms": sms.id}
            row.job_id = await self._outbox.enqueue_in_order(
                session, self._outbound_kind, instance.id, chat_chain(instance.id, line_id, chat), payload
            )
            return {"message_id": message_id, "status": "queued"}

    async def _sender_phone(self, session: AsyncSession, instance_id: int, code: str) -> Phone:
        phones = (
            await session.scalars(
                select(Phone).where(Phone.app_instance_id == instance_id, Phone.sms_service.is_(True))
            )
        ).all()
        phone = next((p for p in phones if sender_code(p.number) == code), None)
        if phone is None:
            raise FieldError("code", f"{code} is not a WhatsApp sender of thoth-pbx on this portal", 404)
        return phone

    async def _part(self, session: AsyncSession, phone: Phone, to: str, body: str) -> tuple[dict[str, Any], str | None]:
        """What to send for this SMS text, or why nothing goes."""
        try:
            command = template_command.parse(body)
            if command is None:
                bare = template_command.parse(body, prefixed=False)
                listed = await self._templates.of_account(session, phone.waba_account_id) if bare else None
                command = bare if bare is not None and any(t.name == bare.name for t in listed or []) else None
        except template_command.CommandError as exc:
            return {"type": "template", "text": body}, f"{exc}; the form is {template_command.SYNTAX}"
        if command is not None:
            return await self._templates.part_for(session, phone.waba_account_id, command, body)
        last = await window.Windows.last_inbound(session, phone.id, to)
        if not window.is_open(last, utcnow()):
            return {"type": "text", "text": body}, (
                "outside the 24-hour window: WhatsApp takes only a template; write the SMS as "
                + template_command.SYNTAX
            )
        return {"type": "text", "text": body[:4096]}, None

    # ------------------------------------------------------------------ statuses

    async def _report(self, session: AsyncSession, sms: MessagingSms, status: str) -> None:
        """Queue `status` for the portal when it moves the SMS forward (in the caller's transaction)."""
        if RANK.get(status, 0) <= RANK.get(sms.reported or "received", 0) and sms.reported is not None:
            return
        sms.reported = status
        await self._outbox.enqueue(
            session,
            KIND_SMS_STATUS,
            sms.app_instance_id,
            f"sms:{sms.app_instance_id}:{sms.id}",
            {"code": sms.code, "message_id": sms.bitrix_message_id, "status": status},
        )

    async def send_done(self, session: AsyncSession, sms_id: int, row: MessagingMessage) -> None:
        """The send job finished (its commit): sent, or failed with Meta's refusal."""
        sms = await session.get(MessagingSms, sms_id)
        if sms is None:
            return
        status = "failed" if row.status == "failed" else "sent"
        sms.status = status if RANK[status] >= RANK.get(sms.status, 0) else sms.status
        sms.error = row.error if status == "failed" else sms.error
        await self._report(session, sms, status)

    async def status_changed(self, session: AsyncSession, row: MessagingMessage) -> None:
        """Meta's status of an SMS's send moved (statuses.py, in its commit)."""
        sms = await session.scalar(select(MessagingSms).where(MessagingSms.row_id == row.id))
        if sms is None:
            return
        status = bitrix_status(row.status, row.error_code)
        if RANK[status] >= RANK.get(sms.status, 0):
            sms.status = status
            sms.error = row.error if status in ("failed", "undelivered") else sms.error
        await self._report(session, sms, status)

    async def run_status(self, job: Job) -> dict[str, Any]:
        client = await self._portals.client(job_instance(job))
        params = {
            "CODE": job.payload["code"],
            "MESSAGE_ID": job.payload["message_id"],
            "STATUS": job.payload["status"],
        }
        try:
            await client.call("messageservice.message.status.update", params)
        except BitrixLogicError as exc:
            # the CRM deleted the message or the sender: nothing left to tell, and the chain must go on
            log.warning("the portal refused an SMS status", extra={"code": exc.code, "status": params["STATUS"]})
            return {"not_reported": exc.code}
        return {"reported": params["STATUS"]}


def _required(form: dict[str, Any], name: str, limit: int) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(name, "is required")
    if len(value) > limit:
        raise FieldError(name, f"is longer than {limit} characters")
    return value.strip()
