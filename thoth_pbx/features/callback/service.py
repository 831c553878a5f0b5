"""Click-to-call: an operator clicks a customer's number in Bitrix24 and thoth-pbx calls the
customer on WhatsApp, or asks for the permission to.

`ONEXTERNALCALLSTART` (Bitrix24 telephony events: dev.1c-bitrix.ru/rest_help/scope_telephony/
telephony/events_telephone/index.php; b24restdocs api-reference/telephony/events/
on-external-call-start.md) comes for a call Bitrix24 has already registered: its `CALL_ID` is
the one we finish, never registered again. The event is stored with its start job in the
transaction that receives it; the job asks Graph for the customer's call permission and either
hands the call to the dialer or sends the permission request and finishes the Bitrix24 call
with a status and a reason the operator sees. Every finish goes through the calls feature's
durable finish job, enqueued in the transaction that marks the row ended (once: a conditional
UPDATE), so restarts and Bitrix24 outages delay the log but never lose or repeat it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.telephony import OUTGOING, FinishCall, RegisterCall
from thoth_pbx.clients.meta import permissions as perms
from thoth_pbx.clients.meta.graph import GraphError
from thoth_pbx.clients.meta.inbox import InboxItem
from thoth_pbx.clients.meta.payloads import Message
from thoth_pbx.features.callback import decide
from thoth_pbx.features.callback.decide import CallbackSettings, Outcome
from thoth_pbx.features.callback.dialer import Dialer, Plan, Progress, channel_ids
from thoth_pbx.features.callback.models import CallbackCall
from thoth_pbx.features.directory import AppInstance, Phone, phone_and_account
from thoth_pbx.features.portal import BitrixEvent, BitrixUser
from thoth_pbx.outbox.jobs import Job, Retry
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.store.base import on_server
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

KIND_START = "callback.start"
ARI_ATTEMPTS = 15  # ~30 s of waiting for a connected ARI (an owner elected, Asterisk back) before giving up
WINDOW = dt.timedelta(hours=24)
PHONE_PREFIX = "wa-"  # the trunk's per-number endpoint (features/trunk/render.py PHONE_PREFIX)
_DIGITS = re.compile(r"[0-9]{6,15}")


class CallLog(Protocol):
    """The calls feature's Bitrix24 call-log jobs (calls/jobs.py CallJobs), handed in by app.py."""

    async def register(self, session: AsyncSession, instance_id: int, request: RegisterCall) -> int: ...

    async def finish(
        self, session: AsyncSession, instance_id: int, external_call_id: str, request: FinishCall
    ) -> int: ...

    async def attach_record(
        self,
        session: AsyncSession,
        instance_id: int,
        external_call_id: str,
        *,
        path: str | None = None,
        record_url: str | None = None,
        filename: str | None = None,
        call_id: str | None = None,
    ) -> int: ...


LastInbound = Callable[[AsyncSession, int, str], Awaitable[dt.datetime | None]]
# the message templates thoth-pbx synchronised for a WhatsApp account (by WabaAccount id), None
# when never synchronised: the messaging feature's listing, handed in by app.py
TemplatesOf = Callable[[AsyncSession, int], Awaitable[Sequence[decide.SyncedTemplate] | None]]


def e164(raw: Any) -> str | None:
    digits = re.sub(r"[\s()+-]", "", str(raw or ""))
    return "+" + digits if _DIGITS.fullmatch(digits) else None


class CallbackService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        call_log: CallLog,
        graph: perms.Graph,
        last_inbound: LastInbound,
        dialers: dict[str | None, Dialer],
        templates: TemplatesOf | None = None,
    ) -> None:
        """`dialers`: one per configured Asterisk, by the name a phone stores (None: the first
        server); a click-to-call is dialled by its number's server. `templates`: the synchronised
        templates the configured permission template is checked against before it is sent."""
        self.sessions = sessions
        self.outbox = outbox
        self.call_log = call_log
        self.graph = graph
        self.last_inbound = last_inbound
        self.dialers = dialers
        self.templates = templates
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._dialed_by: dict[int, Dialer] = {}  # row id -> the dialer of its running task

    # ------------------------------------------------------------------ the Bitrix24 event

    async def on_call_start(self, session: AsyncSession, event: BitrixEvent) -> dict[str, Any]:
        """ONEXTERNALCALLSTART, in the transaction that received it: the row and its start job."""
        data = event.data if isinstance(event.data, dict) else {}
        call_id = str(data.get("CALL_ID") or "").strip()
        if not call_id:
            return {"ignored": "data[CALL_ID] is missing: Bitrix24 registers the call before this event"}
        phone = await self._line(session, event.instance_id, str(data.get("LINE_NUMBER") or ""))
        if phone is None:
            return {"ignored": f"line {data.get('LINE_NUMBER')!r} is not a WhatsApp number of this portal"}
        user_id = _int(data.get("USER_ID"))
        if user_id is None:
            return {"ignored": "data[USER_ID] is missing"}
        customer = e164(data.get("PHONE_NUMBER_INTERNATIONAL")) or e164(data.get("PHONE_NUMBER"))
        extension = await session.scalar(
            select(BitrixUser.extension).where(
                BitrixUser.app_instance_id == event.instance_id,
                BitrixUser.user_id == user_id,
                BitrixUser.active.is_(True),
            )
        )
        row = CallbackCall(
            app_instance_id=event.instance_id,
            phone_id=phone.id,
            bitrix_call_id=call_id[:128],
            user_id=user_id,
            extension=extension or None,
            customer=customer or str(data.get("PHONE_NUMBER") or "")[:64],
            line_number=phone.number.lstrip("+"),
            detail={"crm": [data.get("CRM_ENTITY_TYPE"), data.get("CRM_ENTITY_ID")]},
            asterisk=phone.asterisk,
        )
        try:
            async with session.begin_nested():
                session.add(row)
                await session.flush()
        except IntegrityError:  # the same CALL_ID again (Bitrix24 retried the event): one call only
            return {"duplicate": call_id}
        if customer is None:
            await self._end(session, row, Outcome("404", "Not a phone number WhatsApp can call"))
        elif not extension:
            await self._end(session, row, Outcome("480", "Your Bitrix24 user has no inner phone number to ring"))
        else:
            await self.outbox.enqueue(session, KIND_START, event.instance_id, None, {"id": row.id}, run_now=True)
        return {"callback": row.id}

    async def _line(self, session: AsyncSession, instance_id: int, line_number: str) -> Phone | None:
        query = select(Phone).where(Phone.app_instance_id == instance_id)
        digits = re.sub(r"\D", "", line_number)
        if digits:
            return await session.scalar(query.where(Phone.number == "+" + digits))
        phones = (await session.scalars(query.limit(2))).all()
        return phones[0] if len(phones) == 1 else None  # no line given: only an unambiguous one

    # ------------------------------------------------------------------ the start job

    async def run_start(self, job: Job) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await session.get(CallbackCall, int(job.payload["id"]))
            if row is None or row.state != "new":
                return {"skipped": row.state if row else "gone"}
            found = await phone_and_account(session, row.phone_id) if row.phone_id else None
            instance = await session.get(AppInstance, row.app_instance_id) if row.app_instance_id else None
            settings = CallbackSettings.from_json((instance.settings or {}).get("callback") if instance else None)
            if found is None:
                return await self._end_now(row.id, Outcome("404", "The WhatsApp number is no longer configured"))
            phone, account = found
            dialer = self.dialers.get(phone.asterisk)
            if dialer is None:  # the number names a server the settings no longer have
                return await self._end_now(
                    row.id, Outcome("503", f"thoth-pbx has no Asterisk server {phone.asterisk!r} to dial from")
                )
            last = await self.last_inbound(session, phone.id, row.customer.lstrip("+"))
            synced = None
            if settings.template_name and self.templates is not None:
                synced = await self.templates(session, account.id)
        token, pnid, customer = account.access_token, phone.phone_number_id, row.customer
        try:
            permission = await perms.call_permission(self.graph, token, pnid, customer)
        except GraphError as exc:
            if exc.is_transient:
                raise Retry(str(exc)) from None
            return await self._end_now(row.id, decide.graph_refusal(exc.code, exc.message))
        if decide.may_call(permission.status, permission.can_call):
            if not dialer.ari.connected:  # a standby instance: the owner of the Stasis app dials
                if dialer.ari.target is None or job.attempt >= ARI_ATTEMPTS:
                    return await self._end_now(row.id, Outcome("503", "thoth-pbx cannot reach Asterisk (ARI) to dial"))
                raise Retry("ARI of the click-to-call application is not connected on this instance", after=2.0)
            plan = Plan(
                row.id,
                uuid.uuid4().hex[:8],
                settings.operator_endpoint.format(extension=row.extension),
                f"PJSIP/{customer}@{PHONE_PREFIX}{phone.number.lstrip('+')}",
                settings.operator_ring_seconds,
                settings.customer_ring_seconds,
                settings.record,
                business=phone.number,
                customer=customer,
            )
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(CallbackCall)
                    .where(CallbackCall.id == row.id)
                    .values(
                        state="dialing",
                        detail={**row.detail, "permission": permission.status, "tag": plan.tag},
                        asterisk=phone.asterisk,  # the server dialling it (the number may have moved)
                    )
                )
            self._drive(dialer, plan, Progress())
            return {"dialing": row.id, "permission": permission.status}
        how: str | None = None
        wamid = None
        if permission.can_request:
            window_open = last is not None and utcnow() - last < WINDOW
            try:
                if window_open:
                    how = "interactive"
                    wamid = await perms.request_permission(self.graph, token, pnid, customer, settings.request_text)
                elif settings.template_name:
                    refused = decide.template_refusal(synced, settings.template_name, settings.template_language)
                    if refused is not None:  # a plain template would ask nothing: nothing is sent
                        extra = {"permission": permission.status, "requested": None}
                        return await self._end_now(row.id, refused, extra)
                    how = "template"
                    wamid = await perms.request_permission_template(
                        self.graph, token, pnid, customer, settings.template_name, settings.template_language
                    )
            except GraphError as exc:
                if exc.is_transient:
                    raise Retry(str(exc)) from None
                return await self._end_now(row.id, decide.graph_refusal(exc.code, exc.message))
        outcome = decide.no_permission(how is not None, how)
        extra = {"permission": permission.status, "requested": how, "request_wamid": wamid}
        return await self._end_now(row.id, outcome, extra)

    # ------------------------------------------------------------------ the customer's answer

    async def on_message(self, item: InboxItem) -> None:
        """`call_permission_reply` on the messages webhook: an accepted request rings the operator
        again when the portal says `auto_call_back` (else the operator clicks again)."""
        message = item.model
        if not isinstance(message, Message) or message.type != "interactive" or item.phone is None:
            return
        content = message.content if isinstance(message.content, dict) else {}
        reply = content.get("call_permission_reply")
        if content.get("type") != "call_permission_reply" or not isinstance(reply, dict):
            return
        customer = e164(message.from_)
        if customer is None or reply.get("response") != "accept":
            return
        async with self.sessions() as session, session.begin():
            asked = await session.scalar(
                select(CallbackCall)
                .where(CallbackCall.phone_id == item.phone.id, CallbackCall.customer == customer)
                .order_by(CallbackCall.id.desc())
                .limit(1)
            )
            if asked is None or not (asked.detail or {}).get("requested") or (asked.detail or {}).get("answered_by"):
                return
            asked.detail = {**asked.detail, "answered_by": message.id, "granted_at": utcnow().isoformat()}
            instance = await session.get(AppInstance, asked.app_instance_id) if asked.app_instance_id else None
            settings = CallbackSettings.from_json((instance.settings or {}).get("callback") if instance else None)
            if instance is None or not settings.auto_call_back:
                return
            again = CallbackCall(
                app_instance_id=instance.id,
                phone_id=asked.phone_id,
                bitrix_call_id=f"callback-{asked.id}",
                user_id=asked.user_id,
                extension=asked.extension,
                customer=customer,
                line_number=asked.line_number,
                detail={"registered_by_us": True, "call_back_of": asked.id},
            )
            session.add(again)
            await session.flush()
            # a new Bitrix24 call (the clicked one is finished): outgoing, registered by us
            await self.call_log.register(
                session,
                instance.id,
                RegisterCall(
                    phone_number=customer,
                    type=OUTGOING,
                    external_call_id=again.bitrix_call_id,
                    user_id=asked.user_id,
                    line_number=asked.line_number,
                    call_start_date=utcnow(),
                    show=True,
                ),
            )
            await self.outbox.enqueue(session, KIND_START, instance.id, None, {"id": again.id}, run_now=True)
        log.info("call permission granted: calling back", extra={"callback": again.id, "after": asked.id})

    # ------------------------------------------------------------------ the dialer's side

    def _drive(self, dialer: Dialer, plan: Plan, progress: Progress) -> None:
        task = asyncio.create_task(self._run(dialer, plan, progress), name=f"callback-{plan.row_id}")
        self._tasks[plan.row_id] = task
        self._dialed_by[plan.row_id] = dialer
        task.add_done_callback(lambda _t: (self._tasks.pop(plan.row_id, None), self._dialed_by.pop(plan.row_id, None)))

    async def _run(self, dialer: Dialer, plan: Plan, progress: Progress) -> None:
        try:
            outcome = await dialer.run(plan, progress)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("click-to-call failed", extra={"callback": plan.row_id})
            outcome = Outcome("OTHER", "thoth-pbx failed while placing the call")
        path = await dialer.fetch_recording(progress.recording) if progress.recording else None
        await self._end_now(plan.row_id, outcome, recording=str(path) if path else None)

    async def report(self, row_id: int, state: str, progress: Progress) -> None:
        values: dict[str, Any] = {
            "state": state,
            "operator_channel": progress.operator_channel,
            "customer_channel": progress.customer_channel,
        }
        if state == "connected":
            values["answered_at"] = utcnow()
        async with self.sessions() as session, session.begin():
            row = await session.get(CallbackCall, row_id)
            if row is None or row.state == "ended":
                return
            values["detail"] = {**row.detail, "recording": progress.recording, **progress.extra}
            await session.execute(update(CallbackCall).where(CallbackCall.id == row_id).values(**values))

    # ------------------------------------------------------------------ ending, once

    async def _end_now(
        self, row_id: int, outcome: Outcome, extra: dict[str, Any] | None = None, *, recording: str | None = None
    ) -> dict[str, Any]:
        async with self.sessions() as session, session.begin():
            row = await session.get(CallbackCall, row_id)
            if row is None:
                return {"gone": row_id}
            if extra:
                row.detail = {**row.detail, **extra}
            await self._end(session, row, outcome, recording=recording)
        return {"status_code": outcome.status_code, "reason": outcome.reason}

    async def _end(
        self, session: AsyncSession, row: CallbackCall, outcome: Outcome, *, recording: str | None = None
    ) -> None:
        """Mark the row ended and enqueue its finish, in the caller's transaction; a row already
        ended (another task, another process) is left alone."""
        ended = utcnow()
        done = await session.execute(
            update(CallbackCall)
            .where(CallbackCall.id == row.id, CallbackCall.state != "ended")
            .values(
                state="ended",
                ended_at=ended,
                status_code=outcome.status_code,
                reason=outcome.reason,
                recording_path=recording,
                detail=row.detail,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(done, "rowcount", 1) != 1 or row.app_instance_id is None:
            return
        duration = 0
        if outcome.status_code == decide.ANSWERED and row.answered_at is not None:
            duration = max(0, round((ended - row.answered_at).total_seconds()))
        ours = bool((row.detail or {}).get("registered_by_us"))
        await self.call_log.finish(
            session,
            row.app_instance_id,
            row.bitrix_call_id,
            FinishCall(
                user_id=row.user_id,
                duration=duration,
                status_code=outcome.status_code,
                add_to_chat=True,
                failed_reason=outcome.reason if outcome.status_code != decide.ANSWERED else None,
                call_id=None if ours else row.bitrix_call_id,  # ours: the chain's register gives it
            ),
        )
        if recording and outcome.status_code == decide.ANSWERED:
            await self.call_log.attach_record(
                session,
                row.app_instance_id,
                row.bitrix_call_id,
                path=recording,
                call_id=None if ours else row.bitrix_call_id,
            )
        log.info(
            "click-to-call ended",
            extra={"callback": row.id, "status_code": outcome.status_code, "reason": outcome.reason},
        )

    # ------------------------------------------------------------------ restarts

    async def recover(self, asterisk: str | None = None) -> None:
        """On every ARI (re)connect of one server: its calls of an earlier run still talking are
        watched to their end; the others (their legs gone while we were away) are finished with
        what is known. Another server's calls are not in this server's channels: left alone."""
        dialer = self.dialers[asterisk]
        try:
            live = await dialer.live_channels()
            async with self.sessions() as session:
                rows = (
                    await session.scalars(
                        select(CallbackCall).where(
                            CallbackCall.state.in_(("dialing", "calling", "connected")),
                            on_server(CallbackCall.asterisk, asterisk),
                        )
                    )
                ).all()
        except Exception:
            log.exception("click-to-call recovery failed")
            return
        for row in rows:
            if row.id in self._tasks:
                continue
            legs = [c for c in (row.operator_channel, row.customer_channel) if c]
            if row.state == "connected" and legs and all(c in live for c in legs):
                detail = row.detail or {}
                progress = Progress(
                    row.operator_channel,
                    row.customer_channel,
                    True,
                    detail.get("recording"),
                    {"bridge": detail.get("bridge")},
                )
                self._drive(dialer, Plan(row.id, str(detail.get("tag") or ""), "", "", 0, 0), progress)
                log.info("click-to-call re-attached", extra={"callback": row.id})
                continue
            for channel_id in channel_ids(row.id, str((row.detail or {}).get("tag") or "")):
                if channel_id in live:
                    try:
                        await dialer.ari.request("DELETE", f"/channels/{channel_id}")
                    except Exception:
                        pass
            outcome = (
                Outcome(decide.ANSWERED)
                if row.state == "connected"
                else Outcome("603-S", "thoth-pbx restarted while the call was being set up")
            )
            await self._end_now(row.id, outcome)
            log.warning("click-to-call finished after a restart", extra={"callback": row.id, "state": row.state})

    async def stop(self, asterisk: str | None | Literal["all"] = "all") -> None:
        """Cancel the running calls' tasks (all, or one server's: it lost its ARI ownership)."""
        only = None if asterisk == "all" else self.dialers.get(asterisk)
        tasks = [task for row_id, task in self._tasks.items() if only is None or self._dialed_by.get(row_id) is only]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None
