"""A WhatsApp user answering a call permission request, as Meta reports it: the permission is
stored on the business number (temporary for 7 days, or permanent) and a `call_permission_reply`
interactive message comes on the `messages` webhook field (developers.facebook.com/docs/
whatsapp/cloud-api/calling/user-call-permissions)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from thoth_pbx.sandbox.meta.state import SimPhone

TEMPORARY_S = 7 * 24 * 3600


def permission_reply(
    phone: SimPhone,
    user: str,
    *,
    accept: bool = True,
    permanent: bool = False,
    context_id: str | None = None,
    name: str = "Sandbox User",
) -> dict[str, Any]:
    """The user's answer: the permission stored (when accepted) and the webhook change to post."""
    now = int(time.time())
    expires = now + TEMPORARY_S
    user = user.lstrip("+")
    if accept:
        phone.call_permissions[user] = (
            {"status": "permanent"} if permanent else {"status": "temporary", "expiration_time": expires}
        )
    message: dict[str, Any] = {
        "from": user,
        "id": "wamid." + secrets.token_urlsafe(24),
        "timestamp": str(now),
        "type": "interactive",
        "interactive": {
            "type": "call_permission_reply",
            "call_permission_reply": {
                "response": "accept" if accept else "reject",
                "is_permanent": permanent,
                "expiration_timestamp": expires,
                "response_source": "user_action",
            },
        },
    }
    if context_id:
        message["context"] = {"from": phone.display_phone_number.lstrip("+"), "id": context_id}
    return {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": phone.display_phone_number.lstrip("+"),
                "phone_number_id": phone.phone_number_id,
            },
            "contacts": [{"profile": {"name": name}, "wa_id": user}],
            "messages": [message],
        },
    }
