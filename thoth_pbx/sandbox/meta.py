"""A strict simulator of the Graph API endpoints thoth-pbx uses, built from Meta's docs.

Run it with `thoth-pbx sandbox meta` and point the service at it
(`THOTH_META_GRAPH_URL=http://127.0.0.1:8900`). It is strict on purpose: a lenient fake
proves nothing. What it enforces (sources: docs/meta.md and the Meta fact sheet):

- auth: `Authorization: Bearer T` or `access_token=T`; none -> code 104 (HTTP 400),
  unknown -> 190 (401), expired -> 190 subcode 463, missing permission -> 10 (403),
  a phone outside the token's WABAs -> 100 subcode 33;
- `POST /{phone_number_id}/settings`: only documented fields (others -> 100 naming the
  param), enum values, one SIP server per number, hostname required, port 5061 by default,
  request_uri_user_params <= 128 chars, SIP ENABLED needs a server (100),
  calling ENABLED needs a messaging limit >= 2000 (138015) and SIP or an app subscribed to
  the `calls` field (138018); `servers: []` deletes this app's server and its password;
  DISABLED keeps servers; an omitted `holiday_schedule` deletes the existing one;
- `GET .../settings[?include_sip_credentials=true]`: the stored settings, servers with
  `app_id`, the password (one per number + app) only with credentials and only for the
  caller's app; `srtp_key_exchange_protocol` only when it was set explicitly;
- `POST /{phone_number_id}/messages` (messages; `status: read` receipts with an optional
  typing indicator, only for message ids a webhook announced), `POST /{phone_number_id}/calls`
  (131055 on a SIP number, 138000 when calling is off; accept/reject/terminate only for call ids
  a `connect` webhook announced or `connect` placed, else 100 naming call_id),
  `GET /{phone_number_id}` and `GET /{waba_id}/phone_numbers` (`fields=`, unknown field 100),
  `GET /{phone_number_id}/call_permissions?user_wa_id=`, `GET /debug_token`;
- control endpoints under `/_sandbox/` (not Graph): seed apps, tokens and phones (PATCH sets
  `call_permissions` per user), read the state and the request log, make the next call(s) fail
  with any Graph error, and send signed webhooks (see `WebhookSender`); what those webhooks
  announce (message and call ids) is remembered by `announce()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

GRAPH_VERSION_RE = re.compile(r"^v\d{1,3}\.\d{1,2}$")
MANAGEMENT = "whatsapp_business_management"
MESSAGING = "whatsapp_business_messaging"

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
    131055: (400, "OAuthException", "(#131055) Graph API calls are not allowed for SIP enabled numbers"),
    138000: (401, "OAuthException", "(#138000) Calling not enabled"),
    138015: (400, "OAuthException", "(#138015) Calling APIs cannot be enabled for this phone number"),
    138018: (400, "OAuthException", "(#138018) Calling settings update failed: technical pre-requisites are not met"),
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


def invalid(details: str, subcode: int | None = None) -> GraphFail:
    return GraphFail(100, subcode=subcode, details=details)


# ------------------------------------------------------------------ state


@dataclass
class SimApp:
    app_id: str
    app_secret: str
    name: str = "Sandbox app"
    live: bool = True
    subscribed_fields: set[str] = field(default_factory=lambda: {"messages"})


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


class MetaSimulator:
    """State of the simulated Meta plus the aiohttp application serving it."""

    def __init__(self) -> None:
        self.apps: dict[str, SimApp] = {}
        self.tokens: dict[str, SimToken] = {}
        self.phones: dict[str, SimPhone] = {}
        self.failures: list[FailRule] = []
        self.requests: list[dict[str, Any]] = []

    # ---- seeding (also reachable over HTTP under /_sandbox/)

    def add_app(self, app_id: str, app_secret: str, **kw: Any) -> SimApp:
        if "subscribed_fields" in kw:
            kw["subscribed_fields"] = set(kw["subscribed_fields"])
        app = SimApp(app_id, app_secret, **kw)
        self.apps[app_id] = app
        return app

    def add_token(self, token: str, app_id: str, **kw: Any) -> SimToken:
        if app_id not in self.apps:
            raise ValueError(f"unknown app {app_id}")
        if "expires_in" in kw:
            kw["expires_at"] = int(time.time()) + int(kw.pop("expires_in"))
        sim = SimToken(token, app_id, **kw)
        self.tokens[token] = sim
        return sim

    def add_phone(self, phone_number_id: str, display_phone_number: str, waba_id: str, **kw: Any) -> SimPhone:
        phone = SimPhone(phone_number_id, display_phone_number, waba_id, **kw)
        self.phones[phone_number_id] = phone
        return phone

    def fail_next(self, rule: FailRule) -> None:
        self.failures.append(rule)

    def password(self, phone_number_id: str, app_id: str) -> str | None:
        return self.phones[phone_number_id].passwords.get(app_id)

    def state(self) -> dict[str, Any]:
        return {
            "apps": {k: {**asdict(v), "subscribed_fields": sorted(v.subscribed_fields)} for k, v in self.apps.items()},
            "tokens": {k: asdict(v) for k, v in self.tokens.items()},
            "phones": {k: {**asdict(v), "settings": settings_view(v, None, False)} for k, v in self.phones.items()},
            "pending_failures": [asdict(f) for f in self.failures],
        }

    # ---- Graph plumbing

    def _token(self, request: web.Request, body: dict[str, Any] | None) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer ") or auth.lower().startswith("oauth "):
            return auth.split(" ", 1)[1].strip() or None
        return request.query.get("access_token") or (
            (body or {}).get("access_token") if isinstance(body, dict) else None
        )

    def authenticate(self, request: web.Request, body: dict[str, Any] | None) -> SimToken:
        token = self._token(request, body)
        if not token:
            raise GraphFail(104)
        sim = self.tokens.get(token)
        if sim is None:
            raise GraphFail(190)
        if sim.expired:
            when = time.strftime("%A, %d-%b-%y %H:%M:%S UTC", time.gmtime(sim.expires_at))
            raise GraphFail(190, f"Error validating access token: Session has expired on {when}.", subcode=463)
        return sim

    def phone_for(self, token: SimToken, phone_number_id: str, method: str, scope: str) -> SimPhone:
        phone = self.phones.get(phone_number_id)
        if phone is None or (token.waba_ids is not None and phone.waba_id not in token.waba_ids):
            raise GraphFail(
                100,
                f"Unsupported {method.lower()} request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation.",
                subcode=33,
                type_="GraphMethodException",
            )
        if scope not in token.scopes:
            raise GraphFail(10, details=f"the token lacks the {scope} permission")
        return phone

    def take_failure(self, method: str, path: str) -> FailRule | None:
        for rule in self.failures:
            if rule.matches(method, path):
                rule.times -= 1
                if rule.times <= 0:
                    self.failures.remove(rule)
                return rule
        return None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._graph_errors])
        app.router.add_get("/_sandbox/state", self._h_state)
        app.router.add_get("/_sandbox/requests", self._h_requests)
        app.router.add_post("/_sandbox/apps", self._h_add_app)
        app.router.add_post("/_sandbox/tokens", self._h_add_token)
        app.router.add_post("/_sandbox/phones", self._h_add_phone)
        app.router.add_get("/_sandbox/phones/{pnid}", self._h_get_phone)
        app.router.add_patch("/_sandbox/phones/{pnid}", self._h_patch_phone)
        app.router.add_post("/_sandbox/fail-next", self._h_fail_next)
        app.router.add_post("/_sandbox/webhooks", self._h_send_webhooks)
        app.router.add_route("*", "/{version}/{path:.*}", self._h_graph)
        return app

    @web.middleware
    async def _graph_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except GraphFail as fail:
            return fail.response()
        except _ControlError as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _h_graph(self, request: web.Request) -> web.Response:
        version, path = request.match_info["version"], request.match_info["path"].strip("/")
        body = await _body(request)
        self.requests.append(
            {
                "method": request.method,
                "path": f"/{version}/{path}",
                "query": {k: v for k, v in request.query.items() if k != "access_token"},
                "json": body,
                "at": time.time(),
            }
        )
        if not GRAPH_VERSION_RE.match(version):
            raise GraphFail(2500, f"Unknown path components: /{version}/{path}", http_status=400)
        token = self.authenticate(request, body if isinstance(body, dict) else None) if path != "debug_token" else None
        rule = self.take_failure(request.method, path)
        if rule is not None:
            raise GraphFail(
                rule.code,
                rule.message,
                subcode=rule.subcode,
                details=rule.details,
                http_status=rule.http_status,
                type_=rule.type,
            )
        parts = path.split("/")
        if path == "debug_token" and request.method == "GET":
            return web.json_response(self.debug_token(request))
        if len(parts) == 2 and parts[1] == "settings":
            assert token is not None
            if request.method == "GET":
                phone = self.phone_for(token, parts[0], "GET", MANAGEMENT)
                creds = request.query.get("include_sip_credentials", "false").lower()
                if creds not in ("true", "false"):
                    raise invalid("include_sip_credentials must be true or false")
                return web.json_response(settings_view(phone, token.app_id, creds == "true"))
            if request.method == "POST":
                phone = self.phone_for(token, parts[0], "POST", MANAGEMENT)
                update_settings(phone, self.apps[token.app_id], body)
                return web.json_response({"success": True})
        if len(parts) == 2 and parts[1] == "messages" and request.method == "POST":
            assert token is not None
            phone = self.phone_for(token, parts[0], "POST", MESSAGING)
            if isinstance(body, dict) and "status" in body:
                return web.json_response(mark_read(phone, body))
            return web.json_response(send_message(phone, body))
        if len(parts) == 2 and parts[1] == "calls" and request.method == "POST":
            assert token is not None
            phone = self.phone_for(token, parts[0], "POST", MESSAGING)
            return web.json_response(call_action(phone, body))
        if len(parts) == 2 and parts[1] == "call_permissions" and request.method == "GET":
            assert token is not None
            phone = self.phone_for(token, parts[0], "GET", MESSAGING)
            return web.json_response(
                call_permissions_view(phone, request.query.get("user_wa_id"), request.query.get("recipient"))
            )
        if len(parts) == 2 and parts[1] == "phone_numbers" and request.method == "GET":
            assert token is not None
            return web.json_response(self.waba_phone_numbers(token, parts[0], request.query.get("fields")))
        if len(parts) == 1 and parts[0] in self.phones and request.method == "GET":
            assert token is not None
            phone = self.phone_for(token, parts[0], "GET", MANAGEMENT)
            return web.json_response(phone_view(phone, request.query.get("fields"), default=_PHONE_DEFAULT_FIELDS))
        raise GraphFail(
            100,
            f"Unsupported {request.method.lower()} request. Object with ID '{parts[0]}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation.",
            subcode=33,
            type_="GraphMethodException",
        )

    def waba_phone_numbers(self, token: SimToken, waba_id: str, fields: str | None) -> dict[str, Any]:
        """`GET /{waba_id}/phone_numbers`: the WABA's numbers, one page, Graph's paging shape."""
        phones = [p for p in self.phones.values() if p.waba_id == waba_id]
        if not phones or (token.waba_ids is not None and waba_id not in token.waba_ids):
            raise GraphFail(
                100,
                f"Unsupported get request. Object with ID '{waba_id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                subcode=33,
                type_="GraphMethodException",
            )
        if MANAGEMENT not in token.scopes:
            raise GraphFail(10, details=f"the token lacks the {MANAGEMENT} permission")
        data = [phone_view(p, fields, default=_PHONE_LIST_FIELDS) for p in phones]
        cursor = secrets.token_urlsafe(12)
        return {"data": data, "paging": {"cursors": {"before": cursor, "after": cursor}}}

    def announce(self, doc: Any) -> None:
        """Remember what a webhook delivery told the business: inbound message ids (which it may
        then mark as read) and call ids (which it may then accept, reject or terminate)."""
        for entry in (doc or {}).get("entry", []) if isinstance(doc, dict) else []:
            for change in entry.get("changes", []) if isinstance(entry, dict) else []:
                value = change.get("value") if isinstance(change, dict) else None
                if not isinstance(value, dict):
                    continue
                phone = self.phones.get(str((value.get("metadata") or {}).get("phone_number_id")))
                if phone is None:
                    continue
                for message in value.get("messages") or []:
                    if (
                        isinstance(message, dict)
                        and isinstance(message.get("id"), str)
                        and message["id"] not in phone.received
                    ):
                        phone.received.append(message["id"])
                for call in value.get("calls") or []:
                    if isinstance(call, dict) and isinstance(call.get("id"), str):
                        ended = call.get("event") == "terminate"
                        phone.calls[call["id"]] = "ended" if ended else phone.calls.get(call["id"], "active")

    def debug_token(self, request: web.Request) -> dict[str, Any]:
        access = self._token(request, None)
        if not access:
            raise GraphFail(104)
        app_id, _, app_secret = access.partition("|")
        caller = self.apps.get(app_id)
        if caller is None or not hmac.compare_digest(caller.app_secret, app_secret):
            caller_token = self.tokens.get(access)
            if caller_token is None or caller_token.expired:
                raise GraphFail(190)
        input_token = request.query.get("input_token")
        if not input_token:
            raise invalid("The parameter input_token is required")
        sim = self.tokens.get(input_token)
        if sim is None:
            return {
                "data": {
                    "is_valid": False,
                    "error": {"code": 190, "message": "Invalid OAuth access token."},
                    "scopes": [],
                }
            }
        app = self.apps[sim.app_id]
        data: dict[str, Any] = {
            "app_id": sim.app_id,
            "type": sim.type,
            "application": app.name,
            "data_access_expires_at": 0,
            "expires_at": sim.expires_at,
            "is_valid": not sim.expired,
            "issued_at": sim.issued_at,
            "scopes": list(sim.scopes),
            "granular_scopes": [
                {"scope": s, **({"target_ids": sim.waba_ids} if sim.waba_ids else {})} for s in sim.scopes
            ],
            "user_id": sim.user_id,
        }
        if sim.expired:
            data["error"] = {
                "code": 190,
                "subcode": 463,
                "message": "Error validating access token: Session has expired.",
            }
        return {"data": data}

    # ---- control handlers

    async def _h_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _h_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests})

    async def _h_add_app(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        app = self.add_app(str(data.pop("app_id")), str(data.pop("app_secret")), **data)
        return web.json_response({**asdict(app), "subscribed_fields": sorted(app.subscribed_fields)}, status=201)

    async def _h_add_token(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        try:
            token = self.add_token(str(data.pop("token")), str(data.pop("app_id")), **data)
        except (TypeError, ValueError) as exc:
            raise _ControlError(str(exc)) from None
        return web.json_response(asdict(token), status=201)

    async def _h_add_phone(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        phone = self.add_phone(
            str(data.pop("phone_number_id")), str(data.pop("display_phone_number")), str(data.pop("waba_id")), **data
        )
        return web.json_response(asdict(phone), status=201)

    async def _h_get_phone(self, request: web.Request) -> web.Response:
        phone = self._control_phone(request)
        return web.json_response({**asdict(phone), "settings": settings_view(phone, None, False)})

    async def _h_patch_phone(self, request: web.Request) -> web.Response:
        phone = self._control_phone(request)
        data = await _control_json(request)
        for key, value in data.items():
            if key not in (
                "messaging_limit",
                "restrictions",
                "display_phone_number",
                "verified_name",
                "quality_rating",
                "call_permissions",
            ):
                raise _ControlError(f"cannot set {key}")
            setattr(phone, key, value)
        return web.json_response(asdict(phone))

    async def _h_fail_next(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        try:
            rule = FailRule(**data)
        except TypeError as exc:
            raise _ControlError(str(exc)) from None
        self.fail_next(rule)
        return web.json_response(asdict(rule), status=201)

    async def _h_send_webhooks(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        sender = WebhookSender(str(data["url"]), str(data["app_secret"]))
        for doc in data["deliveries"]:
            self.announce(doc)
        results = await sender.send(
            [json.dumps(doc).encode() for doc in data["deliveries"]],
            duplicate=bool(data.get("duplicate")),
            reorder=bool(data.get("reorder")),
            corrupt_signature=bool(data.get("corrupt_signature")),
        )
        return web.json_response({"statuses": results})

    def _control_phone(self, request: web.Request) -> SimPhone:
        phone = self.phones.get(request.match_info["pnid"])
        if phone is None:
            raise _ControlError(f"no phone {request.match_info['pnid']}")
        return phone


class _ControlError(ValueError):
    pass


async def _control_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise _ControlError("body must be JSON") from None
    if not isinstance(data, dict):
        raise _ControlError("body must be a JSON object")
    return data


async def _body(request: web.Request) -> Any:
    """Graph accepts JSON bodies and form posts; anything else is an invalid parameter."""
    if not request.can_read_body:
        return None
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid("The request body is not valid JSON") from None
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return {k: _maybe_json(v) for k, v in form.items() if isinstance(v, str)}
    raise invalid(f"Unsupported content type {request.content_type}")


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


# ------------------------------------------------------------------ settings (pure)

_CALLING_KEYS = {
    "status",
    "call_icon_visibility",
    "call_icons",
    "callback_permission_status",
    "call_hours",
    "sip",
    "srtp_key_exchange_protocol",
    "audio",
}
_ENUMS = {
    "status": ("ENABLED", "DISABLED"),
    "call_icon_visibility": ("DEFAULT", "DISABLE_ALL", "HIDE_IN_CHAT"),
    "callback_permission_status": ("ENABLED", "DISABLED"),
    "srtp_key_exchange_protocol": ("DTLS", "SDES"),
}
_DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
_HHMM = re.compile(r"^([01]\d|2[0-3])[0-5]\d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _expect_keys(where: str, value: Any, allowed: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"Param {where} must be a JSON object")
    allowed = set(allowed)
    for key in value:
        if key not in allowed:
            raise invalid(f"Param {where}[{key}] is not a valid parameter")
    return value


def _enum(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise invalid(f"Param {where} must be one of {{{', '.join(choices)}}}")
    return str(value)


def validate_settings(body: Any) -> dict[str, Any]:
    """Check a settings update field by field; return the `calling` object."""
    body = _expect_keys("body", body, {"calling"})
    if "calling" not in body:
        raise invalid("The parameter calling is required")
    calling = _expect_keys("calling", body["calling"], _CALLING_KEYS)
    for key, choices in _ENUMS.items():
        if key in calling:
            _enum(f"calling[{key}]", calling[key], choices)
    if "audio" in calling:
        audio = _expect_keys("calling[audio]", calling["audio"], {"additional_codecs"})
        codecs = audio.get("additional_codecs", [])
        if not isinstance(codecs, list) or any(c not in ("PCMA", "PCMU") for c in codecs):
            raise invalid("Param calling[audio][additional_codecs] may only hold PCMA and PCMU (Opus is always on)")
    if "call_icons" in calling:
        icons = _expect_keys("calling[call_icons]", calling["call_icons"], {"restrict_to_user_countries"})
        countries = icons.get("restrict_to_user_countries", [])
        if not isinstance(countries, list) or any(
            not (isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c)) for c in countries
        ):
            raise invalid("Param calling[call_icons][restrict_to_user_countries] must be ISO country codes")
    if "call_hours" in calling:
        _validate_call_hours(calling["call_hours"])
    if "sip" in calling:
        sip = _expect_keys("calling[sip]", calling["sip"], {"status", "servers"})
        if "status" in sip:
            _enum("calling[sip][status]", sip["status"], ("ENABLED", "DISABLED"))
        if "servers" in sip:
            servers = sip["servers"]
            if not isinstance(servers, list):
                raise invalid("Param calling[sip][servers] must be an array")
            if len(servers) > 1:
                raise invalid("Only one SIP server is allowed per phone number")
            for i, server in enumerate(servers):
                where = f"calling[sip][servers][{i}]"
                server = _expect_keys(where, server, {"hostname", "port", "request_uri_user_params"})
                if not isinstance(server.get("hostname"), str) or not server["hostname"].strip():
                    raise invalid(f"Param {where}[hostname] is required")
                port = server.get("port", 5061)
                if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                    raise invalid(f"Param {where}[port] must be a port number")
                params = server.get("request_uri_user_params", {})
                if not isinstance(params, dict) or any(
                    not isinstance(k, str) or not isinstance(v, str) or len(k) > 128 or len(v) > 128
                    for k, v in params.items()
                ):
                    raise invalid(
                        f"Param {where}[request_uri_user_params] keys and values must be strings of at most 128 characters"
                    )
    return calling


def _validate_call_hours(hours: Any) -> None:
    hours = _expect_keys(
        "calling[call_hours]", hours, {"status", "timezone_id", "weekly_operating_hours", "holiday_schedule"}
    )
    _enum("calling[call_hours][status]", hours.get("status"), ("ENABLED", "DISABLED"))
    if hours["status"] != "ENABLED":
        return
    if not isinstance(hours.get("timezone_id"), str) or "/" not in hours["timezone_id"]:
        raise invalid("Param calling[call_hours][timezone_id] is not a valid timezone")
    weekly = hours.get("weekly_operating_hours")
    if not isinstance(weekly, list) or not weekly:
        raise invalid("Param calling[call_hours][weekly_operating_hours] must not be empty")
    per_day: dict[str, list[tuple[str, str]]] = {}
    for entry in weekly:
        entry = _expect_keys(
            "calling[call_hours][weekly_operating_hours][]", entry, {"day_of_week", "open_time", "close_time"}
        )
        day = _enum("day_of_week", entry.get("day_of_week"), _DAYS)
        start, end = entry.get("open_time"), entry.get("close_time")
        if not (
            isinstance(start, str) and _HHMM.match(start) and isinstance(end, str) and _HHMM.match(end) and start < end
        ):
            raise invalid("open_time and close_time must be HHMM with open_time before close_time")
        per_day.setdefault(day, []).append((start, end))
    for day, spans in per_day.items():
        if len(spans) > 2:
            raise invalid(f"At most 2 entries per day are allowed ({day})")
        spans.sort()
        if len(spans) == 2 and spans[1][0] < spans[0][1]:
            raise invalid(f"Operating hours on {day} overlap")
    holidays = hours.get("holiday_schedule", [])
    if not isinstance(holidays, list) or len(holidays) > 20:
        raise invalid("Param calling[call_hours][holiday_schedule] allows at most 20 entries")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for entry in holidays:
        entry = _expect_keys("calling[call_hours][holiday_schedule][]", entry, {"date", "start_time", "end_time"})
        if not (isinstance(entry.get("date"), str) and _DATE.match(entry["date"])):
            raise invalid("holiday_schedule date must be YYYY-MM-DD")
        if entry["date"] < today:
            raise invalid("holiday_schedule date must not be in the past")


def update_settings(phone: SimPhone, app: SimApp, body: Any) -> None:
    """Validate, check the documented preconditions on the merged result, then store."""
    calling = validate_settings(body)
    sip = calling.get("sip", {})
    servers = dict(phone.servers)
    if "servers" in sip:
        servers.pop(app.app_id, None)
        for server in sip["servers"]:
            servers[app.app_id] = {
                "hostname": server["hostname"].strip(),
                "port": server.get("port", 5061),
                **(
                    {"request_uri_user_params": server["request_uri_user_params"]}
                    if server.get("request_uri_user_params")
                    else {}
                ),
            }
    sip_status = sip.get("status", phone.sip_status)
    status = calling.get("status", phone.calling.get("status"))
    if sip_status == "ENABLED" and not servers:
        raise invalid("At least one SIP server must be configured when SIP is enabled")
    if sip_status == "ENABLED" and not app.live:
        raise GraphFail(138018, details="The app must be in Live mode to use SIP")
    if status == "ENABLED":
        if phone.messaging_limit < 2000:
            raise GraphFail(138015, details="The phone number's messaging limit must be at least 2000")
        if sip_status != "ENABLED" and "calls" not in app.subscribed_fields:
            raise GraphFail(138018, details="Configure SIP or subscribe an app to the calls webhook field")
    # stored only now: a refused update changes nothing
    if "servers" in sip and app.app_id not in servers:
        phone.passwords.pop(app.app_id, None)  # documented password reset: clear, then enable again
    phone.servers = servers
    phone.sip_status = sip_status
    for key in (
        "status",
        "call_icon_visibility",
        "callback_permission_status",
        "srtp_key_exchange_protocol",
        "audio",
        "call_icons",
    ):
        if key in calling:
            phone.calling[key] = calling[key]
    if "call_hours" in calling:
        hours = dict(calling["call_hours"])
        hours.setdefault("holiday_schedule", [])  # omitted -> the existing schedule is deleted
        phone.calling["call_hours"] = hours
    for app_id in servers:
        phone.passwords.setdefault(app_id, secrets.token_urlsafe(24))


def settings_view(phone: SimPhone, app_id: str | None, with_credentials: bool) -> dict[str, Any]:
    calling = {k: v for k, v in phone.calling.items()}
    servers = []
    for owner, server in phone.servers.items():
        entry = {"app_id": owner, **server}
        if with_credentials and owner == app_id and owner in phone.passwords:
            entry["sip_user_password"] = phone.passwords[owner]
        servers.append(entry)
    calling["sip"] = {"status": phone.sip_status, "servers": servers}
    if phone.restrictions:
        calling["restrictions"] = {"restrictions_list": phone.restrictions}
    return {"calling": calling}


def send_message(phone: SimPhone, body: Any) -> dict[str, Any]:
    body = _expect_keys(
        "body",
        body,
        {
            "messaging_product",
            "recipient_type",
            "to",
            "type",
            "text",
            "template",
            "interactive",
            "context",
            "image",
            "audio",
            "document",
            "video",
            "sticker",
            "location",
            "contacts",
            "reaction",
            "biz_opaque_callback_data",
        },
    )
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    to = body.get("to")
    if not isinstance(to, str) or not re.fullmatch(r"\+?\d{5,15}", to):
        raise invalid("Param to must be a phone number")
    kind = body.get("type", "text")
    if kind not in body:
        raise invalid(f"Param {kind} is required for type {kind}")
    if kind == "text":
        text = _expect_keys("text", body["text"], {"body", "preview_url"})
        if not isinstance(text.get("body"), str) or not text["body"] or len(text["body"]) > 4096:
            raise invalid("Param text[body] must be 1 to 4096 characters")
    if kind == "template":
        template = _expect_keys("template", body["template"], {"name", "language", "components"})
        if not isinstance(template.get("name"), str) or not isinstance(
            (template.get("language") or {}).get("code"), str
        ):
            raise invalid("Param template requires name and language.code")
    wamid = "wamid." + secrets.token_urlsafe(24)
    phone.sent.append({"id": wamid, **body})
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
        "messages": [{"id": wamid}],
    }


def mark_read(phone: SimPhone, body: Any) -> dict[str, Any]:
    """`POST /{phone_number_id}/messages` with `status: read` (mark as read), optionally with a
    typing indicator. Sources: developers.facebook.com/docs/whatsapp/cloud-api/guides/mark-message-as-read,
    developers.facebook.com/docs/whatsapp/cloud-api/typing-indicators."""
    body = _expect_keys("body", body, {"messaging_product", "status", "message_id", "typing_indicator"})
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    if body.get("status") != "read":
        raise invalid("Param status must be read")
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise invalid("Param message_id is required")
    if message_id not in phone.received:
        raise invalid(f"Param message_id {message_id} is not a message received on this phone number")
    if "typing_indicator" in body:
        typing = _expect_keys("typing_indicator", body["typing_indicator"], {"type"})
        if typing.get("type") != "text":
            raise invalid("Param typing_indicator[type] must be text")
    phone.read.append(dict(body))
    return {"success": True}


# `GET /{phone_number_id}` without `fields` answers these; the WABA's list answers more.
# Source: developers.facebook.com/docs/graph-api/reference/whats-app-business-account-to-number-current-status
# and .../whatsapp/business-management-api/manage-phone-numbers (example responses).
_PHONE_DEFAULT_FIELDS = (
    "verified_name",
    "code_verification_status",
    "display_phone_number",
    "quality_rating",
    "platform_type",
    "throughput",
    "id",
)
_PHONE_LIST_FIELDS = _PHONE_DEFAULT_FIELDS
# Every field of the node in Graph's reference (whats-app-business-account-to-number-current-status);
# fields the simulator has no value for are left out of the answer, as Graph leaves out unset ones.
_PHONE_FIELDS = {
    *_PHONE_DEFAULT_FIELDS,
    "name_status",
    "new_name_status",
    "messaging_limit_tier",
    "webhook_configuration",
    "is_official_business_account",
    "account_mode",
    "status",
    "conversational_automation",
    "quality_score",
    "is_on_biz_app",
    "is_pin_enabled",
    "is_preverified_number",
    "search_visibility",
    "eligibility_for_api_business_global_search",
    "health_status",
    "certificate",
    "new_certificate",
    "last_onboarded_time",
    "country_code",
    "country_dial_code",
    "whatsapp_business_manager_messaging_limit",
}


def phone_view(phone: SimPhone, fields: str | None, *, default: tuple[str, ...]) -> dict[str, Any]:
    """A phone number node; `fields=a,b` picks fields, an unknown one is error 100 as on Graph."""
    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else list(default)
    unknown = [f for f in wanted if f not in _PHONE_FIELDS]
    if unknown:
        raise GraphFail(
            100, f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type (WhatsAppBusinessPhoneNumber)"
        )
    tier = next(
        (
            t
            for limit, t in (
                (100_000, "TIER_100K"),
                (10_000, "TIER_10K"),
                (2_000, "TIER_2K"),
                (1_000, "TIER_1K"),
                (250, "TIER_250"),
            )
            if phone.messaging_limit >= limit
        ),
        "TIER_50",
    )
    digits = phone.display_phone_number.lstrip("+")
    node = {
        "verified_name": phone.verified_name,
        "code_verification_status": "VERIFIED",
        "display_phone_number": f"+{digits[:1]} {digits[1:4]}-{digits[4:7]}-{digits[7:]}"
        if len(digits) == 11
        else phone.display_phone_number,
        "quality_rating": phone.quality_rating,
        "platform_type": "CLOUD_API",
        "throughput": {"level": "STANDARD"},
        "id": phone.phone_number_id,
        "name_status": "APPROVED",
        "messaging_limit_tier": tier,
        "webhook_configuration": {"application": "https://example.invalid/webhook"},
        "is_official_business_account": False,
        "account_mode": "LIVE",
        "status": "CONNECTED",
        "is_on_biz_app": False,
        "is_pin_enabled": False,
        "is_preverified_number": False,
    }
    return {k: node[k] for k in wanted if k != "id" and k in node} | {"id": phone.phone_number_id}


_BSUID = re.compile(r"[A-Z]{2}(\.ENT)?\.[A-Za-z0-9]{1,128}")


def call_permissions_view(phone: SimPhone, user_wa_id: str | None, recipient: str | None = None) -> dict[str, Any]:
    """`GET /{phone_number_id}/call_permissions?user_wa_id=` (or `recipient=<BSUID>` for a user
    known only by a business-scoped id). Source:
    developers.facebook.com/docs/whatsapp/cloud-api/calling/user-call-permissions (response shape,
    limits: 1 request per 24 h and 2 per 7 days, 100 connected calls per 24 h) and
    developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids/."""
    if not user_wa_id and not recipient:
        raise invalid("The parameter user_wa_id or recipient is required")
    if user_wa_id and not re.fullmatch(r"\d{5,15}", user_wa_id):
        raise invalid("Param user_wa_id must be a WhatsApp user id (digits)")
    if recipient and not _BSUID.fullmatch(recipient):
        raise invalid("Param recipient must be a business-scoped user id (e.g. US.13491208655302741918)")
    user = user_wa_id or recipient
    assert user is not None
    granted = phone.call_permissions.get(user)
    now = int(time.time())
    if granted and granted.get("status") == "temporary" and int(granted.get("expiration_time", 0)) <= now:
        granted = None
    permission: dict[str, Any] = {"status": "no_permission"}
    if granted:
        permission = {"status": granted["status"]}
        if granted["status"] == "temporary":
            permission["expiration_time"] = int(granted["expiration_time"])
    return {
        "messaging_product": "whatsapp",
        "permission": permission,
        "actions": [
            {
                "action_name": "send_call_permission_request",
                "can_perform_action": granted is None,
                "limits": [
                    {"time_period": "PT24H", "max_allowed": 1, "current_usage": 0},
                    {"time_period": "P7D", "max_allowed": 2, "current_usage": 0},
                ],
            },
            {
                "action_name": "start_call",
                "can_perform_action": granted is not None,
                "limits": [{"time_period": "PT24H", "max_allowed": 100, "current_usage": 0}],
            },
        ],
    }


def call_action(phone: SimPhone, body: Any) -> dict[str, Any]:
    if phone.sip_status == "ENABLED":
        raise GraphFail(131055)
    if phone.calling.get("status") != "ENABLED":
        raise GraphFail(138000)
    body = _expect_keys(
        "body", body, {"messaging_product", "to", "call_id", "action", "session", "biz_opaque_callback_data"}
    )
    if body.get("messaging_product") != "whatsapp":
        raise invalid("Param messaging_product must be whatsapp")
    action = body.get("action")
    if action not in ("connect", "pre_accept", "accept", "reject", "terminate"):
        raise invalid("Param action must be connect, pre_accept, accept, reject or terminate")
    if action == "connect":
        call_id = "wacid." + secrets.token_urlsafe(24)
        phone.calls[call_id] = "active"
        return {"messaging_product": "whatsapp", "calls": [{"id": call_id}]}
    call_id = body.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid("Param call_id is required")
    # Only calls Meta announced (a connect webhook) or placed (action connect) can be acted on;
    # the calling troubleshooting page lists no dedicated code, so it is 100 naming call_id.
    state = phone.calls.get(call_id)
    if state is None:
        raise invalid(f"Param call_id {call_id} is not a call on this phone number")
    if state == "ended":
        raise invalid(f"Param call_id {call_id} refers to a call that has already ended")
    if action in ("reject", "terminate"):
        phone.calls[call_id] = "ended"
    return {"messaging_product": "whatsapp", "success": True}


# ------------------------------------------------------------------ webhooks


def _metadata(phone_number_id: str, display: str) -> dict[str, Any]:
    return {"display_phone_number": display.lstrip("+"), "phone_number_id": phone_number_id}


def delivery(waba_id: str, changes: list[dict[str, Any]], *, time: int | None = None) -> dict[str, Any]:
    """The envelope Meta posts: one entry (the WABA) with the given changes. `time` is the
    entry's trigger timestamp, which Meta's references show on account-level fields
    (developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/account_update)."""
    entry: dict[str, Any] = {"id": waba_id}
    if time is not None:
        entry["time"] = time
    entry["changes"] = changes
    return {"object": "whatsapp_business_account", "entry": [entry]}


def message_change(
    phone_number_id: str,
    display: str,
    sender: str,
    text: str,
    *,
    name: str = "Sandbox User",
    wamid: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    return {
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": _metadata(phone_number_id, display),
            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
            "messages": [
                {
                    "from": sender,
                    "id": wamid or "wamid." + secrets.token_urlsafe(24),
                    "timestamp": str(timestamp or int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        },
    }


def messages_change(phone_number_id: str, display: str, sender: str, count: int) -> dict[str, Any]:
    """One change holding `count` messages (Meta batches up to 1000 updates)."""
    change = message_change(phone_number_id, display, sender, "m0")
    change["value"]["messages"] = [
        {
            "from": sender,
            "id": "wamid." + secrets.token_urlsafe(24),
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": f"message {i}"},
        }
        for i in range(count)
    ]
    return change


def status_change(phone_number_id: str, display: str, wamid: str, status: str, recipient: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if status == "failed":
        item["errors"] = [
            {
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {
                    "details": "More than 24 hours have passed since the recipient last replied to the sender number."
                },
            }
        ]
    return {
        "field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": _metadata(phone_number_id, display), "statuses": [item]},
    }


def call_connect_change(
    phone_number_id: str,
    display: str,
    call_id: str,
    caller: str,
    *,
    direction: str = "USER_INITIATED",
    sdp: str | None = None,
) -> dict[str, Any]:
    sdp = sdp or "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 3480 RTP/SAVP 111 126\r\n"
    return {
        "field": "calls",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": _metadata(phone_number_id, display),
            "contacts": [{"profile": {"name": "Sandbox Caller"}, "wa_id": caller}],
            "calls": [
                {
                    "id": call_id,
                    "from": caller,
                    "to": display.lstrip("+"),
                    "event": "connect",
                    "timestamp": str(int(time.time())),
                    "direction": direction,
                    "session": {"sdp_type": "offer" if direction == "USER_INITIATED" else "answer", "sdp": sdp},
                }
            ],
        },
    }


def call_terminate_change(
    phone_number_id: str,
    display: str,
    call_id: str,
    caller: str,
    *,
    status: str = "COMPLETED",
    duration: int | None = 42,
) -> dict[str, Any]:
    now = int(time.time())
    item: dict[str, Any] = {
        "id": call_id,
        "from": caller,
        "to": display.lstrip("+"),
        "event": "terminate",
        "direction": "USER_INITIATED",
        "timestamp": str(now),
        "status": status,
    }
    if duration is not None:  # only for answered calls
        item.update(start_time=str(now - duration), end_time=str(now), duration=duration)
    return {
        "field": "calls",
        "value": {"messaging_product": "whatsapp", "metadata": _metadata(phone_number_id, display), "calls": [item]},
    }


def sign(body: bytes, app_secret: str) -> str:
    """X-Hub-Signature-256 as Meta computes it: HMAC-SHA256 of the raw body, hex, "sha256=" prefix."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Posts signed deliveries like Meta does, with the faults Meta really shows."""

    def __init__(self, url: str, app_secret: str, *, timeout: float = 20.0) -> None:
        self.url = url
        self.app_secret = app_secret
        self.timeout = timeout  # Meta gives up after about 20 s and retries later

    async def send(
        self,
        bodies: list[bytes],
        *,
        duplicate: bool = False,
        reorder: bool = False,
        corrupt_signature: bool = False,
        seed: int | None = None,
    ) -> list[int]:
        """Send each body (raw bytes, signed as they are); returns the HTTP statuses in send order."""
        plan = [b for body in bodies for b in ((body, body) if duplicate else (body,))]
        if reorder:
            random.Random(seed).shuffle(plan)
        statuses = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            for body in plan:
                signature = sign(body, self.app_secret)
                if corrupt_signature:
                    signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
                async with session.post(
                    self.url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature,
                        "User-Agent": "facebookexternalua",
                    },
                ) as response:
                    await response.read()
                    statuses.append(response.status)
        return statuses


# ------------------------------------------------------------------ runner


@dataclass
class Seed:
    app_id: str = "1000000000000001"
    app_secret: str = "sandbox-app-secret-0123456789"
    token: str = "EAASandbox" + "0" * 24
    waba_id: str = "102290129340398"
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "+15550100001"


def seeded(seed: Seed | None = None) -> MetaSimulator:
    """A simulator with one live app (subscribed to messages and calls), a permanent token and a phone."""
    seed = seed or Seed()
    sim = MetaSimulator()
    sim.add_app(seed.app_id, seed.app_secret, subscribed_fields={"messages", "calls"})
    sim.add_token(seed.token, seed.app_id)
    sim.add_phone(seed.phone_number_id, seed.display_phone_number, seed.waba_id)
    return sim


async def serve(host: str, port: int, seed: Seed | None = None, ready: Callable[[], None] | None = None) -> None:
    """Run the simulator until cancelled (used by `thoth-pbx sandbox meta`); `ready` once listening."""
    sim = seeded(seed)
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    if ready is not None:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
