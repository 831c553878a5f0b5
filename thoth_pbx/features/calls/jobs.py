"""Outbox job kinds of the call log in Bitrix24, and the helpers the call flow enqueues them with.

A call's jobs share the chain `bitrix-call:<instance>:<EXTERNAL_CALL_ID>`, so the outbox
runs them in order (register, show/hide, finish, attachRecord) and later jobs read the
CALL_ID from the register result stored on the chain. Resending after a crash is safe:

- register: Bitrix returns the same CALL_ID for identical parameters within 30 minutes
  while the call is not finished; our payload is stored, so a resend is identical, and
  EXTERNAL_CALL_ID is unique per physical call, so two calls never share a CALL_ID.
- finish: once finished, a CALL_ID is no longer among active calls and Bitrix answers
  ERROR_CORE "Call is not found ...". When an earlier attempt may have been delivered
  (`job.maybe_delivered`), that answer means "already finished" and the job is done.
- show/hide: idempotent (true/false). attachRecord: a repeat replaces the record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from thoth_pbx.clients.bitrix import telephony
from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.clients.bitrix.telephony import FinishCall, RegisterCall
from thoth_pbx.core.metrics import CALL_ANNOUNCE_SECONDS
from thoth_pbx.features.calls.crm_contact import CREATED_CONTACT, NEW_CONTACT, register_params
from thoth_pbx.features.portal import Portals, guarded, job_instance
from thoth_pbx.outbox.jobs import Fail, Handler, Job, OnDone
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_REGISTER = "bitrix.call.register"
KIND_FINISH = "bitrix.call.finish"
KIND_SHOW = "bitrix.call.show"
KIND_HIDE = "bitrix.call.hide"
KIND_RECORD = "bitrix.call.record"
STORED_AT = "_thoth_stored_at"  # in the register job's payload, never sent: when the call was stored
CALL_KINDS = (KIND_REGISTER, KIND_FINISH, KIND_SHOW, KIND_HIDE, KIND_RECORD)


def call_chain(instance_id: int, external_call_id: str) -> str:
    key = external_call_id if len(external_call_id) <= 80 else hashlib.sha256(external_call_id.encode()).hexdigest()
    return f"bitrix-call:{instance_id}:{key}"


class CallJobs:
    """What the call flow enqueues, inside its own transaction (see outbox.py)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def register(
        self,
        session: AsyncSession,
        instance_id: int,
        request: RegisterCall,
        *,
        new_contact: dict[str, Any] | None = None,
        stored_at: dt.datetime | None = None,
    ) -> int:
        """`new_contact`: crm.contact.add fields; the job adds the contact and binds the call to it
        (a caller without a phone number, crm_contact.py). `stored_at`: when the call was stored,
        the start of its announce latency (thoth_call_announce_seconds)."""
        # the first job of the call's chain: started by the commit itself (no claim round trip),
        # which is most of the announce latency an operator would otherwise wait for
        payload = request.params() | ({NEW_CONTACT: new_contact} if new_contact else {})
        if stored_at is not None:
            payload[STORED_AT] = stored_at.timestamp()
        return await self._outbox.enqueue(
            session,
            KIND_REGISTER,
            instance_id,
            call_chain(instance_id, request.external_call_id),
            payload,
            run_now=True,
        )

    def result_of(self, session: AsyncSession, job_id: int) -> asyncio.Future[dict[str, Any] | None]:
        """The stored result of a job enqueued in `session`'s transaction (Outbox.watch)."""
        return self._outbox.watch(session, job_id)

    def started(self, session: AsyncSession, job_id: int) -> asyncio.Future[None]:
        """Resolved once that job has run up to its first wait (Outbox.started): awaited before the
        next call of a burst is stored, so each register leaves in arrival order, at once."""
        return self._outbox.started(session, job_id)

    async def show(self, session: AsyncSession, instance_id: int, external_call_id: str, user_ids: list[int]) -> int:
        return await self._outbox.enqueue(
            session, KIND_SHOW, instance_id, call_chain(instance_id, external_call_id), {"USER_ID": list(user_ids)}
        )

    async def hide(self, session: AsyncSession, instance_id: int, external_call_id: str, user_ids: list[int]) -> int:
        return await self._outbox.enqueue(
            session, KIND_HIDE, instance_id, call_chain(instance_id, external_call_id), {"USER_ID": list(user_ids)}
        )

    async def finish(self, session: AsyncSession, instance_id: int, external_call_id: str, request: FinishCall) -> int:
        return await self._outbox.enqueue(
            session, KIND_FINISH, instance_id, call_chain(instance_id, external_call_id), request.params()
        )

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
    ) -> int:
        """The file is read when the job runs (it is usually complete only after hang-up).
        `call_id`: for a call Bitrix24 registered itself (click-to-call), none on the chain."""
        if not path and not record_url:
            raise ValueError("path or record_url is required")
        name = filename or Path(path or record_url or "").name
        payload = {"path": path, "RECORD_URL": record_url, "FILENAME": name}
        return await self._outbox.enqueue(
            session,
            KIND_RECORD,
            instance_id,
            call_chain(instance_id, external_call_id),
            payload | ({"CALL_ID": call_id} if call_id else {}),
        )


def _call_id(job: Job) -> str:
    call_id = job.payload.get("CALL_ID") or (job.previous(KIND_REGISTER) or {}).get("CALL_ID")
    if not call_id:
        raise Fail("no CALL_ID: this call's chain has no successful register job")
    return str(call_id)


def register_call_jobs(outbox: Outbox, portals: Portals, *, on_registered: OnDone | None = None) -> None:
    """Teach the outbox the call log's job kinds (the calls feature's wiring calls this once)."""

    @guarded
    async def register(job: Job) -> dict[str, Any]:
        client = await portals.client(job_instance(job))
        # the stored parameters, byte for byte (a resend is identical); no CALL_ID is an error
        stored = dict(job.payload)
        stored_at = stored.pop(STORED_AT, None)
        params, contact_id = await register_params(client, stored)
        registered = await telephony.register_call(client, params)
        if isinstance(stored_at, (int, float)):
            CALL_ANNOUNCE_SECONDS.observe(max(0.0, time.time() - stored_at))
        return registered.raw | ({CREATED_CONTACT: contact_id} if contact_id else {})

    @guarded
    async def finish(job: Job) -> dict[str, Any]:
        call_id = _call_id(job)
        client = await portals.client(job_instance(job))
        try:
            finished = await telephony.finish_call(client, call_id, job.payload)
        except BitrixLogicError as exc:
            if exc.is_call_not_found() and job.maybe_delivered:
                log.info(
                    "finish repeated after an unconfirmed attempt: already finished",
                    extra={"job": job.id, "call_id": call_id},
                )
                return {"CALL_ID": call_id, "already_finished": True}
            raise
        return finished.raw

    def card(show: bool) -> Handler:
        @guarded
        async def run(job: Job) -> dict[str, Any]:
            client = await portals.client(job_instance(job))
            act = telephony.show_call if show else telephony.hide_call
            return {"result": await act(client, _call_id(job), job.payload.get("USER_ID"))}

        return run

    @guarded
    async def record(job: Job) -> dict[str, Any]:
        call_id = _call_id(job)
        client = await portals.client(job_instance(job))
        content = None
        if job.payload.get("path"):
            try:
                content = Path(job.payload["path"]).read_bytes()
            except OSError as exc:
                raise Fail(f"cannot read the recording: {exc}") from None
        try:
            file_id = await telephony.attach_record(
                client,
                call_id,
                filename=str(job.payload["FILENAME"]),
                content=content,
                record_url=job.payload.get("RECORD_URL"),
            )
        except ValueError as exc:
            raise Fail(str(exc)) from None
        return {"CALL_ID": call_id, "FILE_ID": file_id}

    outbox.register(KIND_REGISTER, register, on_done=on_registered)
    outbox.register(KIND_FINISH, finish)
    outbox.register(KIND_SHOW, card(True))
    outbox.register(KIND_HIDE, card(False))
    outbox.register(KIND_RECORD, record)
