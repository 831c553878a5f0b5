"""The CRM entity Bitrix24 bound a customer's Open Lines chat to becomes the customer's CRM
link, so their first call (without a phone number to search by) lands on it too (issue 17).

Bitrix24's Open Lines bind a new chat to CRM as the line's settings say (CRM: search the client;
CRM_CREATE: lead by default). The app is not told which entity: neither the
imconnector.send.messages answer (only `session: {ID, CHAT_ID}`) nor any event carries it. So,
once per Open Lines chat of a customer with no link yet, a job of its own asks
`imopenlines.dialog.get {CHAT_ID}` (apidocs.bitrix24.com/api-reference/imopenlines/openlines/
sessions/imopenlines-dialog-get.html) and reads `entity_data_1` ("Y|LEAD|1205|N|N|321|...":
bound, type, ID; the session ID sixth, as imopenlines-session-history-get.html says), falling
back to `entity_data_2` ("LEAD|0|COMPANY|0|CONTACT|9014|DEAL|10008") for a contact, company or
lead when the chat's own entity is a deal (a call binds only those three). An existing link is
never overwritten. The chat may be bound a moment after its first message: an unbound chat is
asked again a few times, then left alone (docs/messaging.md)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.bitrix.errors import BitrixLogicError
from thoth_pbx.features.customers import Customer, link_crm
from thoth_pbx.features.portal import Portals, job_instance
from thoth_pbx.outbox.jobs import Job, Retry
from thoth_pbx.outbox.models import OutboxJob
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

KIND_CRM_LINK = "bitrix.messaging.crm_link"
CALL_TYPES = ("CONTACT", "COMPANY", "LEAD")  # what telephony.externalCall.register binds a call to
UNBOUND_ATTEMPTS = 5  # an unbound chat is asked this often, then left alone
UNBOUND_RETRY_S = 60.0


def crm_chain(instance_id: int, im_chat_id: str) -> str:
    return f"wa-crm:{instance_id}:{im_chat_id}"[:128]


async def enqueue_crm_link(
    session: AsyncSession, outbox: Outbox, instance_id: int, customer_id: int | None, im_chat_id: str | None
) -> int | None:
    """In the caller's transaction (the inbound job's commit): ask for the chat's CRM binding
    when the customer has no link yet and this chat was never asked (its own chain, one job)."""
    if customer_id is None or not im_chat_id:
        return None
    customer = await session.get(Customer, customer_id)
    if customer is None or customer.crm_entity_id is not None:
        return None
    chain = crm_chain(instance_id, im_chat_id)
    if await session.scalar(select(OutboxJob.id).where(OutboxJob.chain == chain).limit(1)) is not None:
        return None
    return await outbox.enqueue(
        session, KIND_CRM_LINK, instance_id, chain, {"customer_id": customer_id, "chat_id": im_chat_id}
    )


def _number(value: str) -> int:
    return int(value) if value.isdigit() else 0


def crm_entity_of(dialog: Any) -> tuple[str, int] | None:
    """The CRM entity a call can be bound to, from an imopenlines.dialog.get result."""
    if not isinstance(dialog, dict):
        return None
    first = str(dialog.get("entity_data_1") or "").split("|")
    if len(first) >= 3 and first[0] == "Y" and first[1] in CALL_TYPES and _number(first[2]) > 0:
        return first[1], _number(first[2])
    pairs = str(dialog.get("entity_data_2") or "").split("|")
    bound = {pairs[i]: _number(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}
    for entity_type in CALL_TYPES:
        if bound.get(entity_type, 0) > 0:
            return entity_type, bound[entity_type]
    return None


class CrmLinks:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], portals: Portals) -> None:
        self._sessions = sessions
        self._portals = portals

    async def run(self, job: Job) -> dict[str, Any]:
        chat_id = str(job.payload["chat_id"])
        client = await self._portals.client(job_instance(job))
        try:
            dialog = await client.call("imopenlines.dialog.get", {"CHAT_ID": chat_id})
        except BitrixLogicError as exc:  # ACCESS_ERROR: the app's user cannot see the chat
            log.warning("the portal refused the Open Lines chat's CRM binding", extra={"chat": chat_id})
            return {"chat_id": chat_id, "linked": False, "refused": str(exc)[:500]}
        entity = crm_entity_of(dialog)
        if entity is None:
            if job.attempt < UNBOUND_ATTEMPTS:
                raise Retry("the Open Lines chat is not bound to CRM yet", after=UNBOUND_RETRY_S)
            return {"chat_id": chat_id, "linked": False, "bound": None}
        async with self._sessions() as session, session.begin():
            linked = await link_crm(session, int(job.payload["customer_id"]), *entity)
        return {"chat_id": chat_id, "linked": linked, "bound": {"entity_type": entity[0], "entity_id": entity[1]}}
