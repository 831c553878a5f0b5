"""The simulator's HTTP side: Graph routing, auth, control endpoints under /_sandbox/, and the runner."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from thoth_pbx.sandbox.meta import apps, pages
from thoth_pbx.sandbox.meta.media import (
    MAX_MEDIA,
    MEDIA_URL_TTL,
    SimMedia,
    Upload,
    check_media,
    media_view,
    new_media_id,
    read_upload,
    upload_mime,
)
from thoth_pbx.sandbox.meta.methods import (
    _PHONE_DEFAULT_FIELDS,
    _PHONE_LIST_FIELDS,
    call_action,
    call_permissions_view,
    mark_read,
    phone_view,
    planned_statuses,
    send_message,
    settings_view,
    update_settings,
)
from thoth_pbx.sandbox.meta.state import (
    AUTO_STATUSES,
    GRAPH_VERSION_RE,
    MANAGEMENT,
    MESSAGING,
    FailRule,
    GraphFail,
    Seed,
    SimApp,
    SimPhone,
    SimToken,
    check_waba_reach,
    invalid,
)
from thoth_pbx.sandbox.meta.templates import TEMPLATE_FIELD, SimTemplate, TemplateControl, seed_templates
from thoth_pbx.sandbox.meta.webhooks import (
    StatusDelivery,
    StatusPoster,
    WebhookSender,
    delivery,
    status_change,
    status_error,
)

# What the control endpoints may set on an app and a phone.
_APP_FIELDS = ("name", "live", "subscribed_fields", "callback_url", "webhook_version")
_PHONE_PATCH_FIELDS = (
    "messaging_limit",
    "restrictions",
    "display_phone_number",
    "verified_name",
    "quality_rating",
    "call_permissions",
    "auto_statuses",
    "undeliverable",
    "enforce_window",
    "window_error",
)


class MetaSimulator(TemplateControl):
    """State of the simulated Meta plus the aiohttp application serving it (templates and the
    customer service window: templates.py)."""

    def __init__(self) -> None:
        self.apps: dict[str, SimApp] = {}
        self.tokens: dict[str, SimToken] = {}
        self.phones: dict[str, SimPhone] = {}
        self.failures: list[FailRule] = []
        self.requests: list[dict[str, Any]] = []
        # what media URLs expire against; tests replace it instead of sleeping
        self.clock: Callable[[], float] = time.time
        self.media: dict[str, SimMedia] = {}
        self.media_urls: dict[str, tuple[str, float]] = {}  # opaque key -> (media id, expires at)
        self.media_downloads: list[dict[str, Any]] = []  # {"media_id", "ok", "status"} per download
        self.webhook_log: list[dict[str, Any]] = []  # {"wamid", "status", "http_status", "attempt"}
        self.status_poster = StatusPoster(self.webhook_log)
        self.templates: dict[str, SimTemplate] = {}

    # ---- seeding (also reachable over HTTP under /_sandbox/)

    def add_app(self, app_id: str, app_secret: str, **kw: Any) -> SimApp:
        app = SimApp(app_id, app_secret, **_app_fields(kw))
        self.apps[app_id] = app
        return app

    def update_app(self, app_id: str, **kw: Any) -> SimApp:
        """Change an app's settings (`callback_url`, `webhook_version`, `subscribed_fields`, ...)."""
        app = self.apps.get(app_id)
        if app is None:
            raise ValueError(f"unknown app {app_id}")
        for key, value in _app_fields(kw).items():
            setattr(app, key, value)
        return app

    def add_media(self, phone_number_id: str, data: bytes, mime_type: str, *, inbound: bool = True) -> str:
        """Store media on a phone and return its id. By default it is media a WhatsApp user sent
        (for `media_message_change`): any MIME type up to 100 MB, uploaded on no business number.
        `inbound=False` makes it media the business uploaded (checked like `POST /{pnid}/media`),
        which the number may then send by id."""
        if phone_number_id not in self.phones:
            raise ValueError(f"unknown phone {phone_number_id}")
        if not mime_type or "/" not in mime_type:
            raise ValueError("mime_type must be a MIME type such as image/jpeg")
        if inbound and len(data) > MAX_MEDIA:
            raise ValueError("media larger than 100 MB cannot be received (Meta reports 131052)")
        if not inbound:
            check_media(mime_type, data)
        media = SimMedia(new_media_id(), phone_number_id, bytes(data), mime_type.strip(), inbound)
        self.media[media.media_id] = media
        return media.media_id

    async def drain_webhooks(self) -> None:
        """Wait until every status webhook queued so far was attempted (use instead of sleeping)."""
        await self.status_poster.drain()

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
            "apps": {k: _app_json(v) for k, v in self.apps.items()},
            "tokens": {k: asdict(v) for k, v in self.tokens.items()},
            "phones": {k: {**asdict(v), "settings": settings_view(v, None, False)} for k, v in self.phones.items()},
            "pending_failures": [asdict(f) for f in self.failures],
            "media": {k: v.summary() for k, v in self.media.items()},
            "media_downloads": self.media_downloads,
            "webhook_log": self.webhook_log,
            "templates": {k: asdict(v) for k, v in self.templates.items()},
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
        app.on_cleanup.append(self._on_cleanup)
        app.router.add_get("/_media/{key}", self._h_media_download)
        app.router.add_get("/_sandbox/state", self._h_state)
        app.router.add_get("/_sandbox/requests", self._h_requests)
        app.router.add_post("/_sandbox/apps", self._h_add_app)
        app.router.add_patch("/_sandbox/apps/{app_id}", self._h_patch_app)
        app.router.add_post("/_sandbox/media", self._h_add_media)
        app.router.add_post("/_sandbox/tokens", self._h_add_token)
        app.router.add_post("/_sandbox/phones", self._h_add_phone)
        app.router.add_get("/_sandbox/phones/{pnid}", self._h_get_phone)
        app.router.add_patch("/_sandbox/phones/{pnid}", self._h_patch_phone)
        app.router.add_post("/_sandbox/fail-next", self._h_fail_next)
        app.router.add_post("/_sandbox/webhooks", self._h_send_webhooks)
        app.router.add_routes(apps.routes(self))  # subscribed_apps, app subscriptions (sandbox/meta/apps.py)
        app.router.add_routes(pages.routes(self))  # GET /_sandbox/page, for people (sandbox/meta/pages.py)
        self.template_routes(app)
        app.router.add_route("*", "/{version}/{path:.*}", self._h_graph)
        return app

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.status_poster.close()

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
        upload: Upload | None = None
        if request.content_type == "multipart/form-data":
            fields, upload = await read_upload(request)
            body: Any = dict(fields)
            logged: Any = {k: v for k, v in fields.items() if k != "access_token"}
            if upload is not None:
                logged["file"] = {
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "size": len(upload.data),
                }
        else:
            body = logged = await _body(request)
        self.requests.append(
            {
                "method": request.method,
                "path": f"/{version}/{path}",
                "query": {k: v for k, v in request.query.items() if k != "access_token"},
                "json": logged,
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
        found = self.template_graph(token, request.method, parts, request.query, request.url, body) if token else None
        if found is not None:
            return web.json_response(found)
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
            uploaded = self.uploaded_media(phone.phone_number_id)
            templates = self.templates_of(phone.waba_id)
            answer = send_message(phone, body, uploaded, templates=templates, now=self.clock())
            self.queue_statuses(phone, self.apps.get(token.app_id), phone.sent[-1], uploaded)
            return web.json_response(answer)
        if len(parts) == 2 and parts[1] == "media" and request.method == "POST":
            assert token is not None
            phone = self.phone_for(token, parts[0], "POST", MESSAGING)
            if not isinstance(body, dict):
                raise invalid("The request body must be multipart/form-data with a file")
            mime_type, data = upload_mime(body, upload)
            media_id = self.add_media(phone.phone_number_id, data, mime_type, inbound=False)
            return web.json_response({"id": media_id})
        if len(parts) == 1 and parts[0] in self.media and request.method in ("GET", "DELETE"):
            assert token is not None
            media = self.media_for(token, parts[0], request.method, request.query.get("phone_number_id"))
            if request.method == "DELETE":
                del self.media[media.media_id]
                for key in [k for k, (mid, _) in self.media_urls.items() if mid == media.media_id]:
                    del self.media_urls[key]
                return web.json_response({"success": True})
            key = secrets.token_urlsafe(24)
            self.media_urls[key] = (media.media_id, self.clock() + MEDIA_URL_TTL)
            return web.json_response(media_view(media, f"{request.url.origin()}/_media/{key}"))
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

    def uploaded_media(self, phone_number_id: str) -> dict[str, str]:
        """Media the business uploaded on this number (may be sent by id): id -> media type."""
        return {
            m.media_id: m.kind
            for m in self.media.values()
            if m.phone_number_id == phone_number_id and not m.inbound and m.kind is not None
        }

    def media_for(self, token: SimToken, media_id: str, method: str, phone_number_id: str | None) -> SimMedia:
        """The media node, if the token may reach it. A `phone_number_id` that is not the number the
        media was uploaded on is refused (media page); media a user sent was uploaded on no business
        number, so it is refused with any `phone_number_id` (the error text is the one integrators
        report, e.g. chatwoot/chatwoot#13319)."""
        media = self.media[media_id]
        phone = self.phones.get(media.phone_number_id)
        if phone is None or (token.waba_ids is not None and phone.waba_id not in token.waba_ids):
            raise GraphFail(
                100,
                f"Unsupported {method.lower()} request. Object with ID '{media_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation.",
                subcode=33,
                type_="GraphMethodException",
            )
        if MESSAGING not in token.scopes:
            raise GraphFail(10, details=f"the token lacks the {MESSAGING} permission")
        if phone_number_id is not None and (media.inbound or phone_number_id != media.phone_number_id):
            raise GraphFail(
                100,
                "(#100) Param phone_number_id is not a valid whatsapp business phone number id ID",
                details=f"media {media_id} was not uploaded on phone number {phone_number_id}",
            )
        return media

    def queue_statuses(
        self, phone: SimPhone, app: SimApp | None, sent: dict[str, Any], uploaded: dict[str, str]
    ) -> None:
        """After an accepted send: queue the signed status webhooks Meta would post for it to the
        sending app's callback URL (only when it has one and is subscribed to `messages`)."""
        if app is None or not app.callback_url or "messages" not in app.subscribed_fields:
            return
        now = int(self.clock())
        recipient = str(sent.get("to") or sent.get("recipient")).lstrip("+")
        template = sent.get("type") == "template"
        # Per-message pricing (status reference): non-template messages are sent inside the
        # customer service window here (free, category service); templates are priced by their
        # category (templates.py keeps it in `rendered`).
        category = str((sent.get("rendered") or {}).get("category", "marketing")).lower()
        pricing = {
            "billable": template,
            "pricing_model": "PMP",
            "type": "regular" if template else "free_customer_service",
            "category": category if template else "service",
        }
        # `conversation` is omitted entirely from v24.0 webhooks on; before, one id per message.
        version = re.match(r"v(\d+)\.(\d+)", app.webhook_version)
        with_conversation = version is not None and (int(version[1]), int(version[2])) < (24, 0)
        conversation_id = secrets.token_hex(16)
        priced_after_sent = False
        deliveries = []
        for status, code in planned_statuses(phone, sent, uploaded):
            # pricing (and conversation) ride on `sent` and on one of `delivered` / `read`
            priced = status == "sent" or (status in ("delivered", "read") and not priced_after_sent)
            if priced and status != "sent":
                priced_after_sent = True
            conversation = None
            if priced and with_conversation:
                conversation = {"id": conversation_id, "origin": {"type": pricing["category"]}}
                if status == "sent":
                    conversation["expiration_timestamp"] = str(now + 24 * 3600)
            change = status_change(
                phone.phone_number_id,
                phone.display_phone_number,
                sent["id"],
                status,
                recipient,
                timestamp=now,
                errors=[status_error(code)] if code is not None else None,
                conversation=conversation,
                pricing=dict(pricing) if priced else None,
                biz_opaque_callback_data=sent.get("biz_opaque_callback_data"),
            )
            body = json.dumps(delivery(phone.waba_id, [change])).encode()
            deliveries.append(StatusDelivery(app.callback_url, app.app_secret, body, sent["id"], status))
        self.status_poster.put(phone.phone_number_id, deliveries)

    def waba_phone_numbers(self, token: SimToken, waba_id: str, fields: str | None) -> dict[str, Any]:
        """`GET /{waba_id}/phone_numbers`: the WABA's numbers, one page, Graph's paging shape."""
        phones = [p for p in self.phones.values() if p.waba_id == waba_id]
        check_waba_reach(token, waba_id, known=bool(phones))
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
                self.note_inbound(value, phone)
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
        if not isinstance(data.get("app_id"), str) or not isinstance(data.get("app_secret"), str):
            raise _ControlError("app_id and app_secret are required strings")
        try:
            app = self.add_app(data.pop("app_id"), data.pop("app_secret"), **data)
        except (TypeError, ValueError) as exc:
            raise _ControlError(str(exc)) from None
        return web.json_response(_app_json(app), status=201)

    async def _h_patch_app(self, request: web.Request) -> web.Response:
        data = await _control_json(request)
        try:
            app = self.update_app(request.match_info["app_id"], **data)
        except (TypeError, ValueError) as exc:
            raise _ControlError(str(exc)) from None
        return web.json_response(_app_json(app))

    async def _h_add_media(self, request: web.Request) -> web.Response:
        """Store raw bytes (the body, typed by its Content-Type) as media on `?phone_number_id=`;
        `?inbound=false` makes it business-uploaded media instead of media a user sent."""
        pnid = request.query.get("phone_number_id", "")
        inbound = request.query.get("inbound", "true").lower()
        if inbound not in ("true", "false"):
            raise _ControlError("inbound must be true or false")
        data = bytearray()
        while chunk := await request.content.read(1 << 20):
            data.extend(chunk)
            if len(data) > MAX_MEDIA:
                raise _ControlError("media larger than 100 MB cannot be stored")
        mime_type = request.headers.get("Content-Type", "")
        try:
            media_id = self.add_media(pnid, bytes(data), mime_type, inbound=inbound == "true")
        except ValueError as exc:
            raise _ControlError(str(exc)) from None
        media = self.media[media_id]
        return web.json_response(
            {"id": media_id, "mime_type": media.mime_type, "sha256": media.sha256, "file_size": media.file_size},
            status=201,
        )

    async def _h_media_download(self, request: web.Request) -> web.StreamResponse:
        """A media URL: the bytes with their Content-Type, for a valid token only (401 without);
        404 once the URL expired (5 minutes after the GET that made it) or the media was deleted."""
        entry = self.media_urls.get(request.match_info["key"])
        media_id = entry[0] if entry else None
        auth = request.headers.get("Authorization", "")
        token = self.tokens.get(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        media = self.media.get(media_id) if media_id else None
        response: web.StreamResponse
        if token is None or token.expired:
            code = 104 if not auth else 190
            response = GraphFail(code, http_status=401).response()
        elif entry is None or media is None or self.clock() >= entry[1] or not self._token_reaches(token, media):
            response = web.Response(status=404, text="Not Found")
        else:
            response = web.Response(body=media.data, headers={"Content-Type": media.mime_type})
        self.media_downloads.append({"media_id": media_id, "ok": response.status == 200, "status": response.status})
        return response

    def _token_reaches(self, token: SimToken, media: SimMedia) -> bool:
        phone = self.phones.get(media.phone_number_id)
        return (
            phone is not None
            and MESSAGING in token.scopes
            and (token.waba_ids is None or phone.waba_id in token.waba_ids)
        )

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
        for key in data:
            if key not in _PHONE_PATCH_FIELDS:
                raise _ControlError(f"cannot set {key}")
        if "auto_statuses" in data:
            statuses = data["auto_statuses"]
            if not isinstance(statuses, list) or any(s not in AUTO_STATUSES for s in statuses):
                raise _ControlError(f"auto_statuses must be a list of {', '.join(AUTO_STATUSES)}")
        if "undeliverable" in data:
            data["undeliverable"] = _undeliverable(data["undeliverable"])
        if data.get("window_error", "webhook") not in ("webhook", "response"):
            raise _ControlError("window_error must be webhook or response")
        for key, value in data.items():
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


def _app_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Check app settings given to add_app / update_app and the control endpoints."""
    for key in kw:
        if key not in _APP_FIELDS:
            raise ValueError(f"cannot set {key} on an app")
    out = dict(kw)
    if "subscribed_fields" in out:
        out["subscribed_fields"] = set(out["subscribed_fields"])
    url = out.get("callback_url")
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("callback_url must be an http or https URL (or null)")
    if "webhook_version" in out and not (
        isinstance(out["webhook_version"], str) and GRAPH_VERSION_RE.match(out["webhook_version"])
    ):
        raise ValueError("webhook_version must look like v25.0")
    return out


def _app_json(app: SimApp) -> dict[str, Any]:
    return {**asdict(app), "subscribed_fields": sorted(app.subscribed_fields)}


def _undeliverable(value: Any) -> dict[str, int]:
    """`["15551234567"]` (code 131026, "Message undeliverable") or `{"15551234567": 131026}`."""
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return dict.fromkeys(value, 131026)
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    ):
        return dict(value)
    raise _ControlError("undeliverable must be a list of wa_ids or an object wa_id -> error code")


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
    """A simulator with one live app (subscribed to messages, calls and template status updates), a
    permanent token, a phone and the seeded templates (templates.seed_templates)."""
    seed = seed or Seed()
    sim = MetaSimulator()
    sim.add_app(seed.app_id, seed.app_secret, subscribed_fields={"messages", "calls", TEMPLATE_FIELD})
    sim.add_token(seed.token, seed.app_id)
    sim.add_phone(seed.phone_number_id, seed.display_phone_number, seed.waba_id)
    for template in seed_templates():
        sim.add_template(seed.waba_id, **template)
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
