"""The CRM contact of a caller without a phone number, made by the register job just before the
register itself (features/calls/notifier.py `without_phone` decides when).

Bitrix24 docs: api-reference/crm/contacts/crm-contact-add.md (crm.contact.add: `fields`, the new
id as the result; deprecated in favour of crm.item.add but still served) and
api-reference/telephony/telephony-external-call-register.md (CRM_ENTITY_TYPE/CRM_ENTITY_ID: the
CRM object the call is bound to).

A contact, not a lead: leads can be switched off on a portal (simple CRM mode), contacts cannot.
At least once: a crash between the contact and the register leaves a contact the resent job
does not know about, and the resend adds another (the register itself is de-duplicated by
Bitrix24, the contact is not).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thoth_pbx.clients.bitrix.telephony import Caller

NEW_CONTACT = "thoth_new_contact"  # register payload key: contact fields to add first (never sent)
CREATED_CONTACT = "thoth_created_contact"  # register result key: the contact added for the call


async def add_contact(client: Caller, fields: Mapping[str, Any]) -> int:
    result = await client.call("crm.contact.add", {"fields": dict(fields)})
    try:
        contact_id = int(result)
    except (TypeError, ValueError):
        raise ValueError(f"crm.contact.add answered without an id: {result!r}") from None
    if contact_id <= 0:
        raise ValueError(f"crm.contact.add answered with id {contact_id}")
    return contact_id


CRM_GET = {"CONTACT": "crm.contact.get", "COMPANY": "crm.company.get", "LEAD": "crm.lead.get"}


async def entity_owner(client: Caller, entity_type: Any, entity_id: Any) -> int | None:
    """ASSIGNED_BY_ID of a CRM entity (crm-contact-get.md and its company/lead siblings), or None
    when the type or id is not one Bitrix24 describes."""
    method = CRM_GET.get(str(entity_type))
    try:
        number = int(entity_id)
    except (TypeError, ValueError):
        return None
    if method is None or number <= 0:
        return None
    entity = await client.call(method, {"id": number})
    try:
        owner = int(entity["ASSIGNED_BY_ID"])
    except (TypeError, ValueError, KeyError):
        return None
    return owner if owner > 0 else None


async def register_params(client: Caller, payload: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The register parameters to send: the stored ones, bound to a new contact when the call
    asked for one (and no entity was given); the contact's id, if one was added."""
    params = dict(payload)
    fields = params.pop(NEW_CONTACT, None)
    if not isinstance(fields, Mapping) or params.get("CRM_ENTITY_ID"):
        return params, None
    contact_id = await add_contact(client, fields)
    params["CRM_ENTITY_TYPE"], params["CRM_ENTITY_ID"] = "CONTACT", contact_id
    return params, contact_id
