"""Where the call flow meets Bitrix24: the `CallNotifier` the Stasis app is handed (calls/wire.py).

It turns call facts into outbox jobs (calls/jobs.py `CallJobs`), in the transaction that
stores the fact, builds the call's context (the portal side: instance, line, settings, user
map) and answers the read-only questions the call flow asks: the portal settings of a
business number, and the CRM owner of a caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix import telephony
from thoth_pbx.clients.bitrix.telephony import FinishCall, RegisterCall, RegisteredCall
from thoth_pbx.core.validation import is_extension
from thoth_pbx.features.calls.callflow import ANSWERED, CallSettings, Operator, normalise_number, talk_seconds
from thoth_pbx.features.calls.crm_contact import CREATED_CONTACT, entity_owner
from thoth_pbx.features.calls.jobs import KIND_REGISTER, CallJobs, call_chain
from thoth_pbx.features.calls.models import Call
from thoth_pbx.features.customers import Customer, link_crm
from thoth_pbx.features.directory import AppInstance, Phone
from thoth_pbx.features.portal import BitrixUser, Portals
from thoth_pbx.outbox.models import OutboxJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallContext:
    """What the notifier needs to know about the portal side of a call."""

    app_instance_id: int | None
    line_number: str  # the WhatsApp business number (Bitrix LINE_NUMBER)
    settings: CallSettings
    register_user_id: int | None = None  # USER_ID for register/finish when nobody answered
    extensions: Mapping[int, str] = field(default_factory=dict)  # Bitrix user id -> extension
    account_id: int | None = None  # the number's WhatsApp Business account: whose customer is calling


# The register's result once delivered (None if it failed for good): routing needs to know
# which CRM entities the register itself created.
RegisterResult = dict[str, Any] | None
Registration = asyncio.Future[RegisterResult]


@dataclass(frozen=True)
class Registering:
    """A register enqueued with its call: `leaving` resolves once its job has run up to its first
    wait (the request is on the wire, or queued behind the portal's limit), `result` once done."""

    result: Registration
    leaving: asyncio.Future[None]


# Bitrix24 requires a user on register/finish; user 1 is the portal's first administrator.
FALLBACK_USER_ID = 1
TYPE_INCOMING = 2


class CallNotifier(Protocol):
    """Bitrix24 side of a call. The `session` methods add durable jobs to the caller's
    transaction; the lookups are best-effort reads with their own short timeouts."""

    async def context(self, session: AsyncSession, phone: Phone | None) -> CallContext: ...

    async def registered(self, session: AsyncSession, call: Call, ctx: CallContext) -> Registering | None: ...

    async def ringing(self, session: AsyncSession, call: Call, ctx: CallContext, operators: list[Operator]) -> None: ...

    async def answered(
        self, session: AsyncSession, call: Call, ctx: CallContext, operator: Operator, others: list[Operator]
    ) -> None: ...

    async def finished(self, session: AsyncSession, call: Call, ctx: CallContext) -> None: ...

    async def responsible(
        self, ctx: CallContext, caller: str, linkedid: str, registration: Registration | None
    ) -> Operator | None: ...


class BitrixCallNotifier:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        jobs: CallJobs,
        portals: Portals,
        global_calls: Mapping[str, Any],
    ) -> None:
        self.sessions = sessions
        self.jobs = jobs
        self.portals = portals
        self.global_calls = dict(global_calls)
        CallSettings.from_json(self.global_calls)  # fail at start on a bad [calls] table

    async def context(self, session: AsyncSession, phone: Phone | None) -> CallContext:
        line = telephony.line_number_for(phone.number) if phone else ""
        account_id = phone.waba_account_id if phone else None
        instance = await session.get(AppInstance, phone.app_instance_id) if phone and phone.app_instance_id else None
        if instance is None or instance.status == "uninstalled":
            return CallContext(None, line, CallSettings.from_json(self.global_calls), account_id=account_id)
        rows = (
            await session.execute(
                select(BitrixUser.user_id, BitrixUser.extension).where(
                    BitrixUser.app_instance_id == instance.id, BitrixUser.active.is_(True)
                )
            )
        ).all()
        by_extension = {ext: uid for uid, ext in rows if is_extension(ext)}  # rows stored before validation too
        overrides = (instance.settings or {}).get("calls", {})
        settings = CallSettings.from_json({**self.global_calls, **overrides}, by_extension)
        first_operator = next((op.user_id for op in settings.ring_group if op.user_id is not None), None)
        register_user = settings.default_user_id or first_operator or FALLBACK_USER_ID
        return CallContext(
            instance.id,
            line,
            settings,
            int(register_user),
            {uid: ext for ext, uid in by_extension.items()},
            account_id=account_id,
        )

    async def registered(self, session: AsyncSession, call: Call, ctx: CallContext) -> Registering | None:
        if ctx.app_instance_id is None:
            return None
        request = RegisterCall(
            phone_number=call.caller,
            type=TYPE_INCOMING,
            external_call_id=call.linkedid,
            user_id=ctx.register_user_id,
            line_number=ctx.line_number,
            call_start_date=call.started_at,
            crm_create=ctx.settings.crm_create,
            show=False,  # cards are shown explicitly to the operators being rung
            add_to_chat=True,
        )
        new_contact = None
        if normalise_number(call.caller) is None:  # no number: bound by the customer identity
            customer = await session.get(Customer, call.customer_id) if call.customer_id else None
            request, new_contact = without_phone(request, customer, ctx.settings)
        job_id = await self.jobs.register(
            session, ctx.app_instance_id, request, new_contact=new_contact, stored_at=call.started_at
        )
        return Registering(self.jobs.result_of(session, job_id), self.jobs.started(session, job_id))

    async def ringing(self, session: AsyncSession, call: Call, ctx: CallContext, operators: list[Operator]) -> None:
        users = [op.user_id for op in operators if op.user_id is not None]
        if ctx.app_instance_id is not None and users:
            await self.jobs.show(session, ctx.app_instance_id, call.linkedid, users)

    async def answered(
        self, session: AsyncSession, call: Call, ctx: CallContext, operator: Operator, others: list[Operator]
    ) -> None:
        users = [op.user_id for op in others if op.user_id is not None and op.user_id != operator.user_id]
        if ctx.app_instance_id is not None and users:
            await self.jobs.hide(session, ctx.app_instance_id, call.linkedid, users)

    async def finished(self, session: AsyncSession, call: Call, ctx: CallContext) -> None:
        if ctx.app_instance_id is None:
            return
        assert call.ended_at is not None
        await self.jobs.finish(
            session,
            ctx.app_instance_id,
            call.linkedid,
            FinishCall(
                # who answered; else the caller's CRM owner; else the portal's default user
                user_id=call.answered_by_user_id
                or (call.detail or {}).get("responsible_user_id")
                or ctx.register_user_id,
                duration=talk_seconds(call.answered_at, call.ended_at),
                status_code=call.status_code,
                add_to_chat=True,
            ),
        )
        if call.recording_path and call.status_code == ANSWERED:
            await self.jobs.attach_record(session, ctx.app_instance_id, call.linkedid, path=call.recording_path)

    async def responsible(
        self, ctx: CallContext, caller: str, linkedid: str, registration: Registration | None
    ) -> Operator | None:
        """The CRM owner of the caller, if they have an extension (searchCrmEntities).

        The search runs while the register is under way; a lead that register auto-created
        (CRM_CREATE) is owned by the register's USER_ID, not by the caller's manager, so the
        entities the register reports as created are left out. While the register's result
        is unknown, nobody is the owner (the ring group takes the call).
        """
        if ctx.app_instance_id is None:
            return None
        client = await self.portals.client(ctx.app_instance_id)
        if normalise_number(caller) is None:  # never searched by a number: the BSUID is none
            return await self._owner_of_bound_entity(ctx, client, linkedid, registration)
        search = asyncio.ensure_future(telephony.search_crm(client, caller))
        try:
            result = await self._register_result(ctx.app_instance_id, linkedid, registration)
            matches = await search
        finally:
            search.cancel()
        if result is not None:
            matches = telephony.known_before(matches, RegisteredCall.from_result(result))
        for match in matches:
            if match.assigned_by_id is None:
                continue
            operator = _operator(ctx, match.assigned_by_id, match.assigned_inner_phone)
            if operator is not None:
                return operator
        return None

    async def _owner_of_bound_entity(
        self, ctx: CallContext, client: telephony.Caller, linkedid: str, registration: Registration | None
    ) -> Operator | None:
        """A caller without a number: the owner of the CRM entity the register bound the call to
        (the customer's linked entity), read with crm.<type>.get. None for a contact added for this
        very call: its owner is the register's USER_ID, not the customer's manager."""
        assert ctx.app_instance_id is not None
        result = await self._register_result(ctx.app_instance_id, linkedid, registration)
        if not result or result.get(CREATED_CONTACT):
            return None
        owner = await entity_owner(client, result.get("CRM_ENTITY_TYPE"), result.get("CRM_ENTITY_ID"))
        return _operator(ctx, owner, None) if owner is not None else None

    async def _register_result(
        self, instance_id: int, linkedid: str, registration: Registration | None
    ) -> dict[str, Any] | None:
        if registration is None:  # a re-attached call: its register ran before the restart
            return await self._stored_register(instance_id, linkedid)
        await asyncio.wait({registration})  # a cancelled watcher (shutdown) must not cancel us
        if registration.cancelled():
            raise RegisterUnknown(linkedid)
        return registration.result()

    async def _stored_register(self, instance_id: int, linkedid: str) -> dict[str, Any] | None:
        """The done register result of a call's chain; `RegisterUnknown` while it is not done."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(OutboxJob)
                .where(OutboxJob.chain == call_chain(instance_id, linkedid), OutboxJob.kind == KIND_REGISTER)
                .order_by(OutboxJob.id)
            )
        if row is None or row.status == "failed":
            return None  # never registered: it created nothing
        if row.status != "done":
            raise RegisterUnknown(linkedid)
        return dict(row.result or {})


def _operator(ctx: CallContext, user_id: int, inner_phone: str | None) -> Operator | None:
    """A CRM owner as an operator to ring: their extension from the user map, else the inner phone
    Bitrix24 gave (checked like every extension)."""
    extension = ctx.extensions.get(user_id) or inner_phone
    if extension and is_extension(str(extension)):
        return Operator(str(extension), user_id)
    if extension:
        log.warning(
            "CRM owner's inner phone number is not an extension; not dialled",
            extra={"user_id": user_id, "field": "USER_PHONE_INNER"},
        )
    return None


class RegisterUnknown(Exception):
    """The register may still create a lead: an owner found now could be its USER_ID."""

    def __str__(self) -> str:
        return f"register of {self.args[0]} not done yet; routing to the ring group"


def without_phone(
    request: RegisterCall, customer: Customer | None, settings: CallSettings
) -> tuple[RegisterCall, dict[str, Any] | None]:
    """The register of a caller Meta gives no number for (docs/calls.md "Callers without a phone
    number"). PHONE_NUMBER is required and its format undocumented: the configured placeholder
    (all zeros). Bitrix24 would search its CRM by that number, and CRM_CREATE would make one lead
    with it that every such caller then shares, so: never CRM_CREATE; the CRM entity already
    linked to the customer (an earlier call or chat) goes as CRM_ENTITY_TYPE/ID; else, when the
    portal's calls create CRM entities, the register job first adds a contact named after the
    customer (the fields returned here), which the operator sees on the call card."""
    bound = replace(request, phone_number=settings.no_phone_number, crm_create=False)
    if customer is not None and customer.crm_entity_id is not None and customer.crm_entity_type:
        return replace(bound, crm_entity_type=customer.crm_entity_type, crm_entity_id=customer.crm_entity_id), None
    if customer is None or not settings.crm_create:
        return bound, None
    return bound, contact_fields(customer)


def contact_fields(customer: Customer) -> dict[str, Any]:
    """crm.contact.add fields for a WhatsApp customer known without a phone number: the name an
    operator recognises (profile name, else @username), the identity in the comment. Username and
    BSUID have strict alphabets (checked before they are stored); the profile name goes to NAME, a
    plain-text field, never into COMMENTS (which Bitrix24 renders as BB code)."""
    handle = f"@{customer.username}" if customer.username else None
    name = (customer.profile_name or "").strip()[:100] or handle or "WhatsApp"
    comment = "WhatsApp" + (f" {handle}" if handle else "") + (f", BSUID {customer.bsuid}" if customer.bsuid else "")
    return {
        "NAME": name,
        "LAST_NAME": handle if handle and name != handle else "",
        "SOURCE_ID": "CALL",
        "SOURCE_DESCRIPTION": "WhatsApp call without a phone number",
        "COMMENTS": comment,
        "OPENED": "Y",
    }


async def store_bitrix_call_id(session: AsyncSession, job: OutboxJob, result: dict[str, Any] | None) -> None:
    """Outbox done-hook of register: keep Bitrix's CALL_ID on the call row (shown to admins), and
    link the CRM entity the call was bound to to its customer (when it has none yet), so a later
    call of a customer without a number is bound to the same entity."""
    external_call_id = (job.payload or {}).get("EXTERNAL_CALL_ID")
    if result and result.get("CALL_ID") and external_call_id:
        customer_id = await session.scalar(
            update(Call)
            .where(Call.linkedid == external_call_id)
            .values(bitrix_call_id=str(result["CALL_ID"]))
            .returning(Call.customer_id)
        )
        if customer_id is not None:
            await link_crm(session, customer_id, result.get("CRM_ENTITY_TYPE"), result.get("CRM_ENTITY_ID"))
