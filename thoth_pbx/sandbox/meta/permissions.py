"""A WhatsApp user answering a call permission request, as Meta reports it: the permission is
stored on the business number (temporary for 7 days, or permanent) and a `call_permission_reply`
interactive message comes on the `messages` webhook field (developers.facebook.com/docs/
whatsapp/cloud-api/calling/user-call-permissions). A request is the interactive
`call_permission_request` message or a template with the `call_permission_request` component
(templates.py CPR); both count against the same limits."""

from __future__ import annotations

import secrets
import time
from typing import Any

from thoth_pbx.sandbox.meta.state import GraphFail, SimPhone

TEMPORARY_S = 7 * 24 * 3600
DAY_S, WEEK_S = 24 * 3600, 7 * 24 * 3600


def request_usage(phone: SimPhone, user: str, now: float) -> tuple[int, int]:
    """Call permission requests sent to `user` in the last 24 hours and the last 7 days."""
    times = phone.permission_requests.get(user.lstrip("+"), [])
    return sum(1 for t in times if now - t < DAY_S), sum(1 for t in times if now - t < WEEK_S)


def check_request(phone: SimPhone, user: str, now: float) -> None:
    """Meta allows 1 request a day and 2 a week per user: beyond that 138009."""
    day, week = request_usage(phone, user, now)
    if day >= 1 or week >= 2:
        raise GraphFail(
            138009, details="Limit of call permission requests to this user reached (1 per 24 h, 2 per 7 days)"
        )


def record_request(phone: SimPhone, user: str, now: float) -> None:
    phone.permission_requests.setdefault(user.lstrip("+"), []).append(now)


def permission_reply(
    phone: SimPhone,
    user: str,
    *,
    accept: bool = True,
    permanent: bool = False,
    context_id: str | None = None,
    name: str = "Sandbox User",
) -> dict[str, Any]:
    """The user's answer: the permission stored (when accepted) and the webhook change to post.
    Only a user who was asked can answer: a call permission request (the interactive message or
    a template with the call_permission_request component) must have been sent to them, else
    ValueError (a plain template has nothing to answer)."""
    now = int(time.time())
    expires = now + TEMPORARY_S
    user = user.lstrip("+")
    if not phone.permission_requests.get(user):
        raise ValueError(f"no call permission request was sent to {user} from {phone.phone_number_id}")
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
