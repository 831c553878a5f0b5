"""The simulator's HTTP side: REST at /rest/<method> (OAuth) and /rest/<user>/<code>/<method> (webhooks), OAuth at /oauth/token/, batch, the leaky bucket, bad-day switches, control endpoints under /_sandbox/, events posted to the service, and the Open Lines chat side (openlines.py): file downloads, operators writing, /_sandbox/disk/ and /_sandbox/portals/{member_id}/openlines."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from thoth_pbx.clients.bitrix import phpquery
from thoth_pbx.sandbox.bitrix import messageservice, openlines, pages
from thoth_pbx.sandbox.bitrix import scope as _scope  # noqa: F401  (registers the `scope` method)
from thoth_pbx.sandbox.bitrix.state import (
    DEFAULT_SCOPE,
    MAX_BATCH,
    DiskFile,
    Hook,
    HttpRecord,
    Portal,
    Recorded,
    Recorder,
    SimError,
    SimUser,
    Webhook,
    _Basket,
    _Caller,
    _iso,
    _Paged,
    _Token,
)

log = logging.getLogger(__name__)


class BitrixSimulator:
    """The simulated cloud: portals, the OAuth server and the switches. See the module doc."""

    def __init__(
        self,
        *,
        client_id: str = "local.thoth0sandbox.000001",
        client_secret: str = "sandbox-client-secret-0123456789",
        token_ttl: float = 3600.0,
        operating_window_s: float = 600.0,
        operating_limit: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.operating_window_s = operating_window_s
        # seconds of accumulated execution per method above which the next call gets 429
        # (limits.md; the cloud sets it by configuration, so it is off unless a test sets it)
        self.operating_limit = operating_limit
        # method -> seconds each execution costs on top of its real run time, so tests can
        # watch `time.operating` grow without sleeping
        self.method_cost: dict[str, float] = {}
        self.clock = clock  # epoch seconds: tokens, `time`, operating baskets, register dedup
        self.portals: dict[str, Portal] = {}
        self.recorder = Recorder()
        self.outage = False
        self.latency = 0.0
        self.storm_every: int | None = None
        self.on_processed: Hook | None = None
        self.oauth_refreshes = 0
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> member_id (one use each)
        self._storm_count = 0
        self._runner: web.AppRunner | None = None
        # Open Lines: files of incoming messages being fetched, operators' files being served
        self.file_timeout = 30.0
        self._downloads: set[asyncio.Task[None]] = set()
        self.disk: dict[str, DiskFile] = {}
        self.current_caller: _Caller | None = None  # who runs the method executing now
        self.host = "127.0.0.1"
        self.port = 0
        from thoth_pbx.sandbox.bitrix import methods as bitrix_methods

        self._methods = bitrix_methods.METHODS

    # ------------------------------------------------------------------ set-up

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def oauth_url(self) -> str:
        """What the service's THOTH_BITRIX_OAUTH_URL should be."""
        return f"{self.base_url}/oauth/token"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/rest/{method}", self._rest)
        app.router.add_route("*", "/p/{portal}/rest/{method}", self._rest)
        for prefix in ("", "/p/{portal}"):  # incoming webhooks, also with a trailing slash
            app.router.add_route("*", prefix + r"/rest/{user_id:\d+}/{code}/{method}", self._rest)
            app.router.add_route("*", prefix + r"/rest/{user_id:\d+}/{code}/{method}/", self._rest)
        app.router.add_route("GET", "/oauth/token/", self._oauth)
        app.router.add_route("GET", "/oauth/token", self._oauth)
        app.router.add_get("/_sandbox/state", self._state)
        app.router.add_post("/_sandbox/switch", self._switch)
        app.router.add_post("/_sandbox/install", self._install_route)
        app.router.add_post("/_sandbox/event", self._event_route)
        app.router.add_get("/_sandbox/disk/{token}", self._disk_route)
        app.router.add_get("/_sandbox/portals/{member_id}/openlines", self._openlines_route)
        app.router.add_post("/_sandbox/operator-message", self._operator_route)
        app.router.add_post("/_sandbox/sms", self._sms_route)
        app.router.add_routes(pages.routes(self))  # GET /_sandbox/page, for people (sandbox/bitrix/pages.py)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server: Any = site._server
        sockets = server.sockets if server else []
        self.host, self.port = host, sockets[0].getsockname()[1] if sockets else port
        return self.base_url

    async def stop(self) -> None:
        for task in list(self._downloads):
            task.cancel()
        if self._downloads:
            await asyncio.gather(*self._downloads, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_portal(
        self,
        *,
        member_id: str | None = None,
        domain: str | None = None,
        rate: float = 2.0,
        burst: int = 50,
        users: list[SimUser] | None = None,
        scope: str = DEFAULT_SCOPE,
    ) -> Portal:
        domain = domain or f"{self.host}:{self.port}"
        taken = any(p.domain == domain and not p.prefix for p in self.portals.values())
        portal = Portal(
            member_id=member_id or secrets.token_hex(16),
            domain=domain,
            prefix=f"/p/{len(self.portals) + 1}" if taken else "",
            rate=rate,
            burst=burst,
            scope=scope,
        )
        for user in users or [SimUser(1, "Admin", "Portal", "100")]:
            portal.users[user.id] = user
        self.portals[portal.member_id] = portal
        return portal

    def add_webhook(
        self, portal: Portal, *, user_id: int = 1, scope: str = DEFAULT_SCOPE, code: str | None = None
    ) -> Webhook:
        """An incoming webhook of `user_id` (who must exist) granting `scope` (comma-separated)."""
        if user_id not in portal.users:
            raise ValueError(f"no user {user_id} on this portal")
        hook = Webhook(portal.next_id("webhook"), user_id, code or secrets.token_hex(8), scope)
        portal.webhooks[(user_id, hook.code)] = hook
        return hook

    def webhook_url(self, portal: Portal, hook: Webhook) -> str:
        """The base URL a client is given: `https://<portal>/rest/<user_id>/<code>/`."""
        return f"{portal.client_endpoint}{hook.user_id}/{hook.code}/"

    # ------------------------------------------------------------------ tokens

    def issue_tokens(self, portal: Portal) -> dict[str, Any]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self._access[access] = _Token(portal.member_id, self.clock() + self.token_ttl)
        self._refresh[refresh] = portal.member_id
        return {
            "access_token": access,
            "refresh_token": refresh,
            "expires": int(self.clock() + self.token_ttl),
            "expires_in": int(self.token_ttl),
            "scope": portal.scope,
            "domain": portal.domain.split(":")[0],
            "server_endpoint": f"{self.base_url}/rest/",
            "status": "L",
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
        }

    def expire_access_tokens(self, portal: Portal | None = None) -> None:
        """Every issued access token of `portal` (or of all portals) expires now."""
        for token in self._access.values():
            if portal is None or token.member_id == portal.member_id:
                token.expires_at = 0.0

    def revoke_refresh_tokens(self, portal: Portal) -> None:
        """Simulate 180 days of silence (or a revoked app): refresh fails with invalid_grant."""
        for token in [t for t, m in self._refresh.items() if m == portal.member_id]:
            del self._refresh[token]

    def move_domain(self, portal: Portal, new_domain: str) -> None:
        """The portal was renamed: the old host answers 302 to the new one."""
        portal.old_domains.add(portal.domain)
        portal.domain = new_domain

    def exhaust_operating(self, portal: Portal, method: str, caller: str = "app") -> float:
        """The method used up its operating time: 429 until the oldest minute basket resets."""
        key = (caller, method.lower())
        until = float(self._operating_reset_at(portal, key, self.clock()))
        portal.operating_blocked[key] = until
        return until

    def operating(self, portal: Portal, method: str, caller: str = "app") -> float:
        """Seconds `method` used in the current window, as the next answer's `time.operating` shows."""
        return self._operating_used(portal, (caller, method.lower()), self.clock())

    # ------------------------------------------------------------------ the portal as a sender

    async def install(self, portal: Portal, handler_url: str) -> tuple[int, Any]:
        """Install (or reinstall) the app: fresh tokens and application_token, binds cleared, POST ONAPPINSTALL."""
        portal.installed = True
        portal.application_token = secrets.token_hex(16)
        portal.bindings.clear()  # event.bind docs: handlers are removed on reinstall/update
        auth = self.issue_tokens(portal)
        auth.pop("expires")
        auth["application_token"] = portal.application_token
        auth["domain"] = portal.domain.split(":")[0]
        form = {
            "event": "ONAPPINSTALL",
            "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"},
            "ts": str(int(self.clock())),
            "auth": auth,
        }
        return await self._post_form(handler_url, form)

    async def uninstall(self, portal: Portal, *, clean: bool = True) -> list[tuple[str, int]]:
        """Remove the app: tokens stop working, ONAPPUNINSTALL goes to its bound handlers."""
        sent = await self.send_event(
            portal, "ONAPPUNINSTALL", {"LANGUAGE_ID": "en", "CLEAN": 1 if clean else 0}, with_tokens=False
        )
        portal.installed = False
        for token in [t for t, v in self._access.items() if v.member_id == portal.member_id]:
            del self._access[token]
        self.revoke_refresh_tokens(portal)
        portal.bindings.clear()
        if clean:
            portal.lines.clear()
        return sent

    async def send_event(
        self,
        portal: Portal,
        event: str,
        data: Any,
        *,
        with_tokens: bool = True,
        application_token: str | None = None,
    ) -> list[tuple[str, int]]:
        """POST `event` to every handler bound to it, form-encoded as Bitrix does; (url, status) each."""
        sent = await self.deliver_event(
            portal, event, data, with_tokens=with_tokens, application_token=application_token
        )
        return [(url, status) for url, status, _ in sent]

    async def deliver_event(
        self,
        portal: Portal,
        event: str,
        data: Any,
        *,
        with_tokens: bool = True,
        application_token: str | None = None,
        auth_user_id: int | None = None,
    ) -> list[tuple[str, int, Any]]:
        """`send_event` with each handler's answer: (url, status, answer); `auth[user_id]` when given."""
        results = []
        for binding in [b for b in portal.bindings if b["event"] == event.upper()]:
            auth: dict[str, Any] = {
                "domain": portal.domain.split(":")[0],
                "client_endpoint": portal.client_endpoint,
                "server_endpoint": f"{self.base_url}/rest/",
                "member_id": portal.member_id,
                "application_token": application_token or portal.application_token or "",
            }
            if with_tokens:
                tokens = self.issue_tokens(portal)
                auth.update(
                    access_token=tokens["access_token"],
                    expires_in=str(int(self.token_ttl)),
                    scope=portal.scope,
                    status="L",
                )
            if auth_user_id is not None:
                auth["user_id"] = auth_user_id
            form = {
                "event": event.upper(),
                "event_handler_id": str(binding["id"]),
                "data": data,
                "ts": str(int(self.clock())),
                "auth": auth,
            }
            status, answer = await self._post_form(binding["handler"], form)
            results.append((binding["handler"], status, answer))
        return results

    # ------------------------------------------------------------------ Open Lines (openlines.py)

    async def operator_writes(
        self,
        portal: Portal,
        line_id: int,
        chat_external_id: str,
        text: str,
        *,
        files: Sequence[tuple[str, bytes, str]] | None = None,
        user_id: int = 1,
        signature: bool = True,
        connector: str | None = None,
    ) -> dict[str, Any]:
        """An operator answers in the chat: recorded, then ONIMCONNECTORMESSAGEADD to the bound handlers.

        `files` are (name, content, MIME type), served at /_sandbox/disk/<token>. Returns
        `{chat_id, message_id, status, answer, sent: [{handler, status, answer}]}` (status and
        answer of the first handler, None when none is bound)."""
        return await openlines.operator_writes(
            self,
            portal,
            line_id,
            chat_external_id,
            text,
            files=files,
            user_id=user_id,
            signature=signature,
            connector=connector,
        )

    async def operator_edits(
        self,
        portal: Portal,
        line_id: int,
        chat_external_id: str,
        message_id: int,
        text: str,
        *,
        signature: bool = True,
        connector: str | None = None,
    ) -> dict[str, Any]:
        """An operator edits message `message_id`: ONIMCONNECTORMESSAGEUPDATE; returns as `operator_writes`."""
        return await openlines.operator_edits(
            self, portal, line_id, chat_external_id, message_id, text, signature=signature, connector=connector
        )

    async def operator_deletes(
        self, portal: Portal, line_id: int, chat_external_id: str, message_id: int, *, connector: str | None = None
    ) -> dict[str, Any]:
        """An operator deletes message `message_id`: ONIMCONNECTORMESSAGEDELETE; returns as `operator_writes`."""
        return await openlines.operator_deletes(
            self, portal, line_id, chat_external_id, message_id, connector=connector
        )

    # ------------------------------------------------------------------ SMS provider (messageservice.py)

    async def send_sms(self, portal: Portal, code: str, to: str, text: str, **kw: Any) -> dict[str, Any]:
        """A CRM user sends an SMS through sender `code`: the handler request goes to its HANDLER;
        returns `{message_id, status, answer}` (see messageservice.send_sms for the options)."""
        return await messageservice.send_sms(self, portal, code, to, text, **kw)

    def sms_statuses(self, portal: Portal) -> list[dict[str, Any]]:
        """The status updates our sender reported, in order: {code, message_id, status, at}."""
        return messageservice.sms_statuses(portal)

    def start_download(self, fetch: Coroutine[Any, Any, None]) -> None:
        """Run a file download in the background, as a portal fetches files after answering."""
        task = asyncio.get_running_loop().create_task(fetch)
        self._downloads.add(task)
        task.add_done_callback(self._downloads.discard)

    async def files_fetched(self) -> None:
        """Wait until every download started so far (and any they led to) has finished."""
        while self._downloads:
            await asyncio.gather(*list(self._downloads), return_exceptions=True)

    def disk_put(self, name: str, content: bytes, mime: str) -> DiskFile:
        """Keep a file on the portal's disk; it answers at /_sandbox/disk/<token>."""
        disk = openlines.new_disk_file(name, content, mime)
        self.disk[disk.token] = disk
        return disk

    async def _post_form(self, url: str, form: Mapping[str, Any]) -> tuple[int, Any]:
        body = phpquery.encode(form)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                url,
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text)
                except ValueError:
                    return resp.status, text

    # ------------------------------------------------------------------ OAuth server

    async def _oauth(self, request: web.Request) -> web.Response:
        seq = self.recorder.next_seq()
        if self.outage:
            self.recorder.requests.append(HttpRecord(seq, time.monotonic(), request.path, 503, "outage"))
            return _outage_page()
        q = request.query
        missing = [k for k in ("grant_type", "client_id", "client_secret", "refresh_token") if not q.get(k)]
        if missing or q.get("grant_type") != "refresh_token":
            return self._oauth_error(
                seq,
                request,
                "invalid_request",
                "grant_type, client_id, client_secret and refresh_token are required",
                400,
            )
        if q["client_id"] != self.client_id or not secrets.compare_digest(q["client_secret"], self.client_secret):
            return self._oauth_error(seq, request, "invalid_client", "Invalid client credentials", 401)
        member_id = self._refresh.pop(q["refresh_token"], None)
        portal = self.portals.get(member_id or "")
        if portal is None or not portal.installed:
            return self._oauth_error(seq, request, "invalid_grant", "Invalid grant", 400)
        self.oauth_refreshes += 1
        self.recorder.requests.append(HttpRecord(seq, time.monotonic(), request.path, 200, None))
        body = self.issue_tokens(portal)
        body["domain"] = urlsplit(self.base_url).hostname  # the OAuth server's own domain (docs)
        body["user_id"] = 1
        return web.json_response(body)

    def _oauth_error(self, seq: int, request: web.Request, code: str, description: str, status: int) -> web.Response:
        self.recorder.requests.append(HttpRecord(seq, time.monotonic(), request.path, status, code))
        return web.json_response({"error": code, "error_description": description}, status=status)

    # ------------------------------------------------------------------ REST

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        seq = self.recorder.next_seq()
        method = request.match_info["method"].lower()
        if method.endswith(".json"):
            method = method[: -len(".json")]
        host = request.host
        prefix = f"/p/{request.match_info['portal']}" if "portal" in request.match_info else ""
        portal = next((p for p in self.portals.values() if p.domain == host and p.prefix == prefix), None)
        if portal is None:
            moved = next((p for p in self.portals.values() if host in p.old_domains and p.prefix == prefix), None)
            if moved is not None:
                self._http(seq, request, 302, "moved")
                location = f"{moved.scheme}://{moved.domain}{request.path_qs}"
                return web.Response(status=302, headers={"Location": location})
            self._http(seq, request, 404, "no_portal")
            return web.Response(status=404, text="No such Bitrix24 portal")
        if self.outage:
            self._http(seq, request, 503, "outage")
            return _outage_page()
        if self.latency:
            await asyncio.sleep(self.latency)
        if not self._bucket_admits(portal):
            self._http(seq, request, 503, "QUERY_LIMIT_EXCEEDED")
            return _error(SimError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503))
        try:
            params = await _read_params(request)
        except SimError as exc:
            self._http(seq, request, exc.status, exc.code)
            return _error(exc)
        token = params.pop("auth", None)  # a webhook call is authorised by its path alone
        try:
            if "code" in request.match_info:
                caller = self._webhook(portal, request.match_info["user_id"], request.match_info["code"])
            else:
                caller = self._authenticate(portal, token)
        except SimError as exc:
            self._http(seq, request, exc.status, exc.code)
            return _error(exc)
        started = self.clock()
        if method == "batch":
            result = self._batch(portal, params, seq, caller)
            self._http(seq, request, 200, None)
            return web.json_response({"result": result, "time": self._time(portal, None, started)})
        try:
            result = self._execute(portal, method, params, batch=None, caller=caller)
        except SimError as exc:
            self._http(seq, request, exc.status, exc.code)
            return _error(exc)
        self._http(seq, request, 200, None)
        body: dict[str, Any] = {"time": self._time(portal, (caller.key, method), started)}
        if isinstance(result, _Paged):
            body.update(result=result.items)
            if result.total is not None:
                body["total"] = result.total
            if result.next is not None:
                body["next"] = result.next
        else:
            body["result"] = result
        return web.json_response(body)

    def _http(self, seq: int, request: web.Request, status: int, error: str | None) -> None:
        self.recorder.requests.append(HttpRecord(seq, time.monotonic(), request.path, status, error))

    def _bucket_admits(self, portal: Portal) -> bool:
        """limits.md: the counter drains `rate`/s; once it exceeds `burst` requests are blocked."""
        now = time.monotonic()
        portal.level = max(0.0, portal.level - (now - portal.stamp) * portal.rate)
        portal.stamp = now
        if portal.level + 1 > portal.burst:
            return False
        portal.level += 1
        return True

    def _webhook(self, portal: Portal, user_id: str, code: str) -> _Caller:
        """A wrong user id or code is 401 INVALID_CREDENTIALS (crm-item-import.md, im-chat-get.md)."""
        hook = portal.webhooks.get((int(user_id), code))
        if hook is None or portal.user(hook.user_id) is None:
            raise SimError("INVALID_CREDENTIALS", "Invalid request credentials", 401)
        return _Caller(hook.caller, hook.scope, hook)

    def _authenticate(self, portal: Portal, token: Any) -> _Caller:
        if self.storm_every:
            self._storm_count += 1
            if self._storm_count % self.storm_every == 0:
                self.expire_access_tokens(portal)
        if not token or not isinstance(token, str):
            raise SimError("NO_AUTH_FOUND", "Wrong authorization data", 401)
        known = self._access.get(token)
        if known is None or known.member_id != portal.member_id:
            raise SimError("NO_AUTH_FOUND", "Wrong authorization data", 401)
        if known.expires_at <= self.clock():
            raise SimError("expired_token", "The access token provided has expired.", 401)
        return _Caller("app", portal.scope)

    def _execute(
        self, portal: Portal, method: str, params: dict[str, Any], *, batch: int | None, caller: _Caller
    ) -> Any:
        seq = self.recorder.next_seq()
        spec = self._methods.get(method)
        key = (caller.key, method)

        def record(ok: bool, error: str | None, result: Any) -> None:
            self._record(
                Recorded(seq, time.monotonic(), portal.member_id, method, params, ok, error, result, batch, caller.key),
                portal,
            )

        try:
            if spec is None:
                raise SimError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
            if spec.scope != "basic" and spec.scope not in caller.scope.replace(" ", ",").split(","):
                holder = "webhook token" if caller.webhook else "access token"
                raise SimError(
                    "insufficient_scope", f"The request requires higher privileges than provided by the {holder}", 403
                )
            if caller.webhook is not None and spec.app_only is not None:
                raise SimError(*spec.app_only)
            if method in portal.refused:
                raise SimError(*portal.refused[method])
            self._check_operating(portal, key)
        except SimError as exc:
            record(False, exc.code, exc.description)
            raise
        began = self.clock()
        self.current_caller = caller
        try:
            result = spec.run(self, portal, params)
        except SimError as exc:
            self._account(portal, key, began)
            record(False, exc.code, exc.description)
            raise
        finally:
            self.current_caller = None
        self._account(portal, key, began)
        record(True, None, result)
        return result

    # ------------------------------------------------------------------ operating time (limits.md)

    def _slot_s(self) -> float:
        return self.operating_window_s / 10  # ten one-minute baskets in the ten-minute window

    def _baskets(self, portal: Portal, key: tuple[str, str], now: float) -> list[_Basket]:
        """The baskets still counted at `now` (a basket drops out `window` after its first call)."""
        baskets = [b for b in portal.operating.get(key, []) if b.first + self.operating_window_s > now]
        portal.operating[key] = baskets
        return baskets

    def _operating_used(self, portal: Portal, key: tuple[str, str], now: float) -> float:
        return sum(b.used for b in self._baskets(portal, key, now))

    def _operating_reset_at(self, portal: Portal, key: tuple[str, str], now: float) -> int:
        baskets = self._baskets(portal, key, now)
        first = baskets[0].first if baskets else now
        return math.ceil(first + self.operating_window_s)  # whole seconds, as answers show it

    def _check_operating(self, portal: Portal, key: tuple[str, str]) -> None:
        """Checked before each call: blocked by `exhaust_operating` or over `operating_limit` -> 429."""
        now = self.clock()
        until = portal.operating_blocked.get(key)
        if until is not None:
            if until > now:
                raise SimError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)
            del portal.operating_blocked[key]
        if self.operating_limit is not None and self._operating_used(portal, key, now) > self.operating_limit:
            raise SimError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)

    def _account(self, portal: Portal, key: tuple[str, str], began: float) -> None:
        """Add this execution (run time plus `method_cost`) to the basket of the minute it began in."""
        used = max(0.0, self.clock() - began) + self.method_cost.get(key[1], 0.0)
        baskets = self._baskets(portal, key, began)
        slot = int(began // self._slot_s())
        if baskets and baskets[-1].slot == slot:
            baskets[-1].used += used
        else:
            baskets.append(_Basket(slot, began, used))

    def _record(self, entry: Recorded, portal: Portal) -> None:
        self.recorder.entries.append(entry)
        if self.on_processed is not None:
            self.on_processed(portal, entry)

    def _time(self, portal: Portal, key: tuple[str, str] | None, started: float) -> dict[str, Any]:
        """The answer's `time`; `operating` is the method's use in its window (none for `batch` itself)."""
        now = self.clock()
        blocked = portal.operating_blocked.get(key) if key else None
        reset_at = self._operating_reset_at(portal, key, now) if key else math.ceil(now + self.operating_window_s)
        return {
            "start": started,
            "finish": now,
            "duration": now - started,
            "processing": now - started,
            "date_start": _iso(started),
            "date_finish": _iso(now),
            "operating_reset_at": math.ceil(blocked) if blocked else reset_at,
            "operating": self._operating_used(portal, key, now) if key else 0,
        }

    # ------------------------------------------------------------------ batch

    def _batch(self, portal: Portal, params: dict[str, Any], seq: int, caller: _Caller) -> dict[str, Any]:
        cmd = params.get("cmd")
        halt = str(params.get("halt", "0")).lower() in ("1", "true", "y")
        if isinstance(cmd, list):
            cmd = {str(i): v for i, v in enumerate(cmd)}
        if not isinstance(cmd, dict):
            cmd = {}
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for index, (key, command) in enumerate(cmd.items()):
            started = self.clock()
            if index >= MAX_BATCH:
                errors[key] = SimError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded").body()
                continue
            method, _, query = str(command).partition("?")
            method = method.strip().lower()
            if method == "batch":
                errors[key] = SimError(
                    "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405
                ).body()
                if halt:
                    break
                continue
            sub = _substitute(phpquery.decode(query), results)
            try:
                result = self._execute(portal, method, sub, batch=seq, caller=caller)
            except SimError as exc:
                errors[key] = exc.body()
                if halt:
                    break
                continue
            if isinstance(result, _Paged):
                results[key] = result.items
                if result.total is not None:
                    totals[key] = result.total
                if result.next is not None:
                    nexts[key] = result.next
            else:
                results[key] = result
            times[key] = self._time(portal, (caller.key, method), started)
        # PHP's json_encode turns an empty array into [] (the docs' examples show it)
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": nexts or [],
            "result_time": times or [],
        }

    # ------------------------------------------------------------------ control API (CLI demo)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "switches": {"outage": self.outage, "latency": self.latency, "storm_every": self.storm_every},
                "oauth": {"client_id": self.client_id, "url": self.oauth_url, "refreshes": self.oauth_refreshes},
                "portals": [
                    {
                        "member_id": p.member_id,
                        "domain": p.domain,
                        "installed": p.installed,
                        "lines": list(p.lines.values()),
                        "bindings": p.bindings,
                        "active_calls": list(p.active_calls),
                        "finished_calls": len(p.statistics),
                        "users": [u.as_json() for u in p.users.values()],
                    }
                    for p in self.portals.values()
                ],
                "calls": self.recorder.as_json(int(request.query.get("limit", "200"))),
            }
        )

    async def _switch(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "outage" in body:
            self.outage = bool(body["outage"])
        if "latency" in body:
            self.latency = float(body["latency"])
        if "storm_every" in body:
            self.storm_every = int(body["storm_every"]) or None
        if body.get("expire_tokens"):
            self.expire_access_tokens()
        return web.json_response({"outage": self.outage, "latency": self.latency, "storm_every": self.storm_every})

    async def _install_route(self, request: web.Request) -> web.Response:
        body = await request.json()
        portal = self._only_portal(body.get("member_id"))
        status, answer = await self.install(portal, str(body["handler"]))
        return web.json_response({"status": status, "answer": answer})

    async def _event_route(self, request: web.Request) -> web.Response:
        body = await request.json()
        portal = self._only_portal(body.get("member_id"))
        sent = await self.send_event(portal, str(body["event"]), body.get("data", {}))
        return web.json_response({"sent": [{"handler": h, "status": s} for h, s in sent]})

    async def _disk_route(self, request: web.Request) -> web.Response:
        """An operator's file: its bytes with its MIME type (`?download=1` as an attachment)."""
        disk = self.disk.get(request.match_info["token"])
        if disk is None:
            return web.Response(status=404, text="File not found")
        disposition = "attachment" if request.query.get("download") else "inline"
        return web.Response(
            body=disk.content,
            content_type=disk.mime,
            headers={"Content-Disposition": f'{disposition}; filename="{disk.name}"'},
        )

    async def _operator_route(self, request: web.Request) -> web.Response:
        """An operator answers in a chat (for people trying the bridge): `{"line", "chat", "text",
        "member_id"?, "user_id"?}` -> ONIMCONNECTORMESSAGEADD to the app, as `operator_writes`."""
        try:
            body = await request.json()
            portal = self._only_portal(body.get("member_id"))
            sent = await self.operator_writes(
                portal, int(body["line"]), str(body["chat"]), str(body["text"]), user_id=int(body.get("user_id", 1))
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response({k: sent[k] for k in ("chat_id", "message_id", "status")})

    async def _sms_route(self, request: web.Request) -> web.Response:
        """A CRM user sends an SMS (for people trying the provider): `{"code", "to", "text",
        "member_id"?, "module_id"?}` -> the handler request, as `send_sms`."""
        try:
            body = await request.json()
            portal = self._only_portal(body.get("member_id"))
            sent = await self.send_sms(
                portal, str(body["code"]), str(body["to"]), str(body["text"]), module_id=body.get("module_id", "crm")
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        return web.json_response(sent)

    async def _openlines_route(self, request: web.Request) -> web.Response:
        portal = self.portals.get(request.match_info["member_id"])
        if portal is None:
            return web.json_response({"error": "no such portal"}, status=404)
        return web.json_response(openlines.view(portal))

    def _only_portal(self, member_id: str | None) -> Portal:
        if member_id:
            return self.portals[member_id]
        return next(iter(self.portals.values()))


_RESULT_REF = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _substitute(value: Any, results: Mapping[str, Any]) -> Any:
    """`$result[key][FIELD]` in a parameter becomes that earlier command's value (batch.md)."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _RESULT_REF.fullmatch(value)
    if whole:
        return _lookup(results, whole.group(1), whole.group(2))
    return _RESULT_REF.sub(lambda m: str(_lookup(results, m.group(1), m.group(2)) or ""), value)


def _lookup(results: Mapping[str, Any], key: str, path: str) -> Any:
    # An unknown reference resolves to "" (undocumented in Bitrix; the method then rejects it).
    node: Any = results.get(key, "")
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(node, dict):
            node = node.get(part, "")
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return ""
    return node


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query string plus a JSON or form body, as Bitrix accepts both."""
    params: dict[str, Any] = phpquery.decode(request.query_string)
    if request.can_read_body:
        raw = await request.read()
        ctype = request.content_type
        if ctype == "application/json":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise SimError("INVALID_REQUEST", "Request body is not valid JSON", 400) from None
            if not isinstance(body, dict):
                raise SimError("INVALID_REQUEST", "Request body must be a JSON object", 400)
            params.update(body)
        elif raw:
            params.update(phpquery.decode(raw))
    return params


def _error(exc: SimError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


def _outage_page() -> web.Response:
    return web.Response(
        status=503,
        text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        content_type="text/html",
    )
