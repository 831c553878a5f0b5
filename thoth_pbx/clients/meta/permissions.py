"""Call permissions of WhatsApp Business Calling (Graph): read a user's permission, ask for it.

Adapters only: the click-to-call feature decides what to do with the answers. Sources:
developers.facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions (GET
/{phone_number_id}/call_permissions?user_wa_id=, the `call_permission_request` interactive
message inside the customer service window, a template with a `call_permission_request`
component outside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Graph(Protocol):
    async def get(self, path: str, token: str, params: dict[str, Any] | None = None) -> dict[str, Any]: ...

    async def post(
        self, path: str, token: str, json: dict[str, Any], *, idempotent: bool = False, attempts: int | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CallPermission:
    """`status`: no_permission | temporary | permanent; `can_call` / `can_request`: the actions'
    `can_perform_action` (a limit reached makes them false even with a permission)."""

    status: str
    can_call: bool
    can_request: bool
    expiration_time: int | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CallPermission:
        raw = body.get("permission")
        permission: dict[str, Any] = raw if isinstance(raw, dict) else {}
        actions = {
            str(a.get("action_name")): bool(a.get("can_perform_action"))
            for a in body.get("actions") or []
            if isinstance(a, dict)
        }
        status = str(permission.get("status") or "no_permission")
        expires = permission.get("expiration_time") or permission.get("expiration")
        return cls(
            status=status,
            can_call=actions.get("start_call", status in ("temporary", "permanent")),
            can_request=actions.get("send_call_permission_request", status == "no_permission"),
            expiration_time=int(expires) if isinstance(expires, int | str) and str(expires).isdigit() else None,
        )


async def call_permission(graph: Graph, token: str, phone_number_id: str, user_wa_id: str) -> CallPermission:
    body = await graph.get(f"{phone_number_id}/call_permissions", token, {"user_wa_id": user_wa_id.lstrip("+")})
    return CallPermission.from_json(body)


async def request_permission(graph: Graph, token: str, phone_number_id: str, to: str, text: str) -> str:
    """The interactive request (inside the 24-hour window); returns the wamid."""
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.lstrip("+"),
        "type": "interactive",
        "interactive": {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
            "body": {"text": text},
        },
    }
    return _wamid(await graph.post(f"{phone_number_id}/messages", token, body, attempts=1))


async def request_permission_template(
    graph: Graph, token: str, phone_number_id: str, to: str, name: str, language: str
) -> str:
    """The approved template that carries the `call_permission_request` component (outside the window)."""
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.lstrip("+"),
        "type": "template",
        "template": {"name": name, "language": {"code": language}},
    }
    return _wamid(await graph.post(f"{phone_number_id}/messages", token, body, attempts=1))


def _wamid(answer: dict[str, Any]) -> str:
    messages = answer.get("messages") or [{}]
    return str(messages[0].get("id") or "")
