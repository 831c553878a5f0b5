"""An operator clicking a customer's number in the CRM, as a portal does it for an external
line chosen as the default outgoing number: the call is registered first (outgoing, TYPE 1, a
CALL_ID like any registered call), then ONEXTERNALCALLSTART goes to the app's bound handlers
with that CALL_ID (Bitrix24 telephony events:
dev.1c-bitrix.ru/rest_help/scope_telephony/telephony/events_telephone/index.php; b24restdocs
api-reference/telephony/events/on-external-call-start.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from thoth_pbx.sandbox.bitrix.methods import register

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator
    from thoth_pbx.sandbox.bitrix.state import Portal


async def click_to_call(
    sim: BitrixSimulator,
    portal: Portal,
    *,
    user_id: int,
    phone: str,
    line_number: str,
    crm_entity: tuple[str, int] | None = None,
) -> tuple[str, list[tuple[str, int, Any]]]:
    """Register the outgoing call as the portal does, then post the event; (CALL_ID, deliveries)."""
    registered = register(
        sim,
        portal,
        {
            "USER_ID": user_id,
            "PHONE_NUMBER": phone,
            "TYPE": 1,
            "LINE_NUMBER": line_number,
            "SHOW": 1,
            **({"CRM_ENTITY_TYPE": crm_entity[0], "CRM_ENTITY_ID": crm_entity[1]} if crm_entity else {}),
        },
    )
    call_id = str(registered["CALL_ID"])
    data = {
        "PHONE_NUMBER": phone,
        "PHONE_NUMBER_INTERNATIONAL": "+" + re.sub(r"\D", "", phone),
        "EXTENSION": "",
        "USER_ID": str(user_id),
        "CALL_LIST_ID": "0",
        "LINE_NUMBER": line_number,
        "IS_MOBILE": "0",
        "CALL_ID": call_id,
        "CRM_ENTITY_TYPE": registered.get("CRM_ENTITY_TYPE") or "",
        "CRM_ENTITY_ID": str(registered.get("CRM_ENTITY_ID") or ""),
    }
    sent = await sim.deliver_event(portal, "ONEXTERNALCALLSTART", data, auth_user_id=user_id)
    return call_id, sent
