"""The simulator's HTTP side: Graph routing, auth, control endpoints under /_sandbox/, and the runner."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from thoth_pbx.sandbox.meta.methods import (
    _PHONE_DEFAULT_FIELDS,
    _PHONE_LIST_FIELDS,
    call_action,
    call_permissions_view,
    mark_read,
    phone_view,
    send_message,
    settings_view,
    update_settings,
)
from thoth_pbx.sandbox.meta.state import (
    GRAPH_VERSION_RE,
    MANAGEMENT,
    MESSAGING,
    FailRule,
    GraphFail,
    Seed,
    SimApp,
    SimPhone,
    SimToken,
    invalid,
)
from thoth_pbx.sandbox.meta.webhooks import WebhookSender


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
