"""The simulated Meta's state (apps, tokens, phones, queued failures) and Graph's error shape."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

GRAPH_VERSION_RE = re.compile(r"^v\d{1,3}\.\d{1,2}$")


MANAGEMENT = "whatsapp_business_management"


MESSAGING = "whatsapp_business_messaging"


# The statuses a delivered and read message goes through (status messages webhook reference).
AUTO_STATUSES = ("sent", "delivered", "read")


# Documented HTTP status and message per Graph error code (WhatsApp error-code list,
# troubleshooting page); used when a test asks for an error without giving them.
KNOWN_ERRORS: dict[int, tuple[int, str, str]] = {
    0: (401, "OAuthException", "(#0) AuthException"),
    3: (500, "OAuthException", "(#3) Application does not have the capability to make this API call."),
    4: (400, "OAuthException", "(#4) Application request limit reached"),
    10: (403, "OAuthException", "(#10) Application does not have permission for this action"),
    100: (400, "OAuthException", "(#100) Invalid parameter"),
    104: (400, "OAuthException", "An access token is required to request this resource."),
    190: (401, "OAuthException", "Invalid OAuth access token - Cannot parse access token"),
    200: (403, "OAuthException", "(#200) Permissions error"),
    80007: (400, "OAuthException", "(#80007) Rate limit issues"),
    130429: (400, "OAuthException", "(#130429) Rate limit hit"),
    131000: (500, "OAuthException", "(#131000) Something went wrong"),
    131016: (503, "OAuthException", "(#131016) Service unavailable"),
    131053: (400, "OAuthException", "(#131053) Media upload error"),
    131055: (400, "OAuthException", "(#131055) Graph API calls are not allowed for SIP enabled numbers"),
    138000: (401, "OAuthException", "(#138000) Calling not enabled"),
    138006: (400, "OAuthException", "(#138006) No approved call permission from the recipient"),
    138009: (400, "OAuthException", "(#138009) Call permission request limit reached"),
    138012: (400, "OAuthException", "(#138012) Business initiated calls limit reached"),
    138015: (400, "OAuthException", "(#138015) Calling APIs cannot be enabled for this phone number"),
    138018: (400, "OAuthException", "(#138018) Calling settings update failed: technical pre-requisites are not met"),
    131047: (400, "OAuthException", "(#131047) Re-engagement message"),
    132000: (400, "OAuthException", "(#132000) Number of parameters does not match the expected number of params"),
    132001: (404, "OAuthException", "(#132001) Template name does not exist in the translation"),
    132012: (400, "OAuthException", "(#132012) Parameter format does not match format in the created template"),
    132015: (400, "OAuthException", "(#132015) Template is Paused"),
    132016: (400, "OAuthException", "(#132016) Template is disabled"),
}


class GraphFail(Exception):
    """Raised inside handlers; rendered in Graph's error shape."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        subcode: int | None = None,
        details: str | None = None,
        http_status: int | None = None,
        type_: str | None = None,
    ) -> None:
        status, default_type, default_message = KNOWN_ERRORS.get(code, (400, "OAuthException", f"(#{code}) Error"))
        self.code = code
        self.message = message or default_message
        self.subcode = subcode
        self.details = details
        self.http_status = http_status or status
        self.type = type_ or default_type
        super().__init__(self.message)

    def response(self) -> web.Response:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
        headers = {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'} if self.http_status == 401 else None
        return web.json_response({"error": error}, status=self.http_status, headers=headers)


def check_waba_reach(token: SimToken, waba_id: str, *, known: bool, method: str = "GET") -> None:
    """What Graph answers for a WABA this token cannot reach (or that does not exist), then for a
    token without the management permission: one check for every WABA edge."""
    if not known or (token.waba_ids is not None and waba_id not in token.waba_ids):
        raise GraphFail(
            100,
            f"Unsupported {method.lower()} request. Object with ID '{waba_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation.",
            subcode=33,
            type_="GraphMethodException",
        )
    if MANAGEMENT not in token.scopes:
        raise GraphFail(10, details=f"the token lacks the {MANAGEMENT} permission")


def invalid(details: str, subcode: int | None = None) -> GraphFail:
    return GraphFail(100, subcode=subcode, details=details)


@dataclass
class SimApp:
    app_id: str
    app_secret: str
    name: str = "Sandbox app"
    live: bool = True
    subscribed_fields: set[str] = field(default_factory=lambda: {"messages"})
    # where status webhooks for this app's sends go (None: none are sent), and the app's
    # webhook version: `conversation` is omitted from status webhooks from v24.0 on
    callback_url: str | None = None
    webhook_version: str = "v25.0"


@dataclass
class SimToken:
    token: str
    app_id: str
    type: str = "SYSTEM_USER"
    expires_at: int = 0  # unix time; 0 = never
    scopes: list[str] = field(default_factory=lambda: [MANAGEMENT, MESSAGING])
    waba_ids: list[str] | None = None  # None: every WABA
    issued_at: int = field(default_factory=lambda: int(time.time()))
    user_id: str = "100000000000001"

    @property
    def expired(self) -> bool:
        return self.expires_at != 0 and self.expires_at <= time.time()


@dataclass
class SimPhone:
    phone_number_id: str
    display_phone_number: str
    waba_id: str
    messaging_limit: int = 100_000  # business-initiated conversations per 24 h
    calling: dict[str, Any] = field(
        default_factory=lambda: {
            "status": "DISABLED",
            "call_icon_visibility": "DEFAULT",
            "callback_permission_status": "DISABLED",
        }
    )
    sip_status: str = "DISABLED"
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)  # app_id -> server
    passwords: dict[str, str] = field(default_factory=dict)  # app_id -> sip_user_password
    restrictions: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    verified_name: str = "Sandbox Business"
    quality_rating: str = "GREEN"
    received: list[str] = field(default_factory=list)  # wamids of messages announced to the business
    read: list[dict[str, Any]] = field(default_factory=list)  # read receipts / typing indicators sent
    calls: dict[str, str] = field(default_factory=dict)  # wacid -> "active" | "ended"
    # user wa_id -> {"status": "temporary"|"permanent", "expiration_time"?: int}
    call_permissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # user wa_id -> times (sim clock) call permission requests went to them (sandbox/meta/permissions.py)
    permission_requests: dict[str, list[float]] = field(default_factory=dict)
    # statuses posted after each accepted send, in order (see MetaSimulator.drain_webhooks)
    auto_statuses: list[str] = field(default_factory=lambda: list(AUTO_STATUSES))
    # recipient wa_id -> error code: such sends get `sent` then `failed` with that code
    undeliverable: dict[str, int] = field(default_factory=dict)
    # the 24-hour customer service window: customer (wa_id or BSUID) -> `sim.clock()` of their
    # last message announced to the business (templates.py). With `enforce_window`, a free-form
    # message outside it fails with 131047: by default accepted, then a `failed` status webhook
    # (how Meta usually reports it); `window_error="response"` refuses the send itself instead.
    last_inbound: dict[str, float] = field(default_factory=dict)
    enforce_window: bool = True
    window_error: str = "webhook"  # "webhook" | "response"
    window_closed: list[str] = field(default_factory=list)  # wamids accepted outside the window


@dataclass
class FailRule:
    code: int
    message: str | None = None
    subcode: int | None = None
    details: str | None = None
    http_status: int | None = None
    type: str | None = None
    times: int = 1
    method: str | None = None
    path: str | None = None  # substring of the Graph path

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and (self.path is None or self.path in path)


@dataclass
class Seed:
    app_id: str = "1000000000000001"
    app_secret: str = "sandbox-app-secret-0123456789"
    token: str = "EAASandbox" + "0" * 24
    waba_id: str = "102290129340398"
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "+15550100001"
