"""The one Bitrix24 HTTP client: per portal, rate limited, batching, self-renewing.

Callers just `await client.call("telephony.externalcall.register", {...})`. Behind that:

- A call to an idle client (nothing queued or on the wire, room in the portal's leaky bucket,
  bucket.py) is sent at once by the caller's own task: no hop through another task, so the
  first call of a burst leaves before the work that follows it on the event loop. Calls
  made while a request is out go into a queue; a dispatcher sends them as soon as the
  bucket has room, and whatever has queued up meanwhile (up to 50) leaves as one `batch`
  request behind the first, never in front of it: bursts cost few requests.
- `expired_token` (any 401) renews the tokens once, single-flight per portal: concurrent
  callers wait for the one renewal and retry with the new token. The rotated refresh
  token is stored (TokenStore) before it is used. `invalid_grant` marks the portal as
  needing re-authorisation; later calls fail fast with `NeedsReauth`.
- 503s and connection failures are retried a few times with backoff when the request
  certainly did not run; QUERY_LIMIT_EXCEEDED also fills our bucket. 429
  OPERATION_TIME_LIMIT blocks that method until `operating_reset_at`. A 302 to a new
  domain moves the portal's endpoint (stored). Logic errors are raised at once.
- A method whose list parameter carries many items (imconnector.send.messages' MESSAGES)
  may be called with a `Merge` (merging.py): queued calls of the same target then share one
  command, their items concatenated in queue order, and the answer is split back per call.
  Under a backlog a request then carries more than 50 calls' worth; an idle client is not
  slowed (nothing waits to be merged). A merged command the portal refuses as a whole is sent
  again call by call, so one bad item cannot fail the others.
- Errors come out typed (errors.py); results as plain JSON values (or `Reply` with the
  paging fields). Higher layers (telephony.py, users.py) wrap them in dataclasses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from thoth_pbx.clients.bitrix import phpquery
from thoth_pbx.clients.bitrix.bucket import Bucket, LeakyBucket
from thoth_pbx.clients.bitrix.errors import (
    TOKEN_EXPIRED,
    BitrixAuthError,
    BitrixError,
    BitrixLogicError,
    BitrixTransientError,
    BitrixUnavailable,
    NeedsReauth,
    OperationTimeLimit,
    QueryLimitExceeded,
    error_from_code,
    error_from_reply,
)
from thoth_pbx.clients.bitrix.merging import Merge
from thoth_pbx.clients.bitrix.transport import PortalHttp, SendFailed
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.metrics import BITRIX_SECONDS

log = logging.getLogger(__name__)

MAX_BATCH = 50  # documented limit of commands in one batch
BATCH_BYTES = 16_000  # larger sub-commands (e.g. base64 records) travel alone as JSON
OPERATING_FALLBACK_S = 60.0
MAX_RENEWALS = 3  # per call  # when a 429 comes with no operating_reset_at seen before


@dataclass(frozen=True)
class OAuthApp:
    """Our application's credentials at the OAuth server (settings.bitrix_*)."""

    client_id: str
    client_secret: str = field(repr=False)
    token_url: str = "https://oauth.bitrix.info/oauth/token"


@dataclass(frozen=True)
class Grant:
    """A token pair from the OAuth server, with the portal facts it vouches for."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: dt.datetime | None
    member_id: str
    client_endpoint: str | None
    server_endpoint: str | None
    domain: str | None
    scope: str | None
    status: str | None


@dataclass
class PortalAuth:
    member_id: str
    client_endpoint: str  # "https://portal.bitrix24.com/rest/"
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


class TokenStore(Protocol):
    """Where a portal's tokens live (the app_instance row); see portals.DbTokenStore."""

    async def load(self) -> PortalAuth: ...

    async def save_grant(self, grant: Grant) -> None: ...

    async def save_endpoint(self, client_endpoint: str) -> None: ...

    async def mark_needs_reauth(self, detail: str) -> None: ...


@dataclass(frozen=True)
class Reply:
    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] | None = None


@dataclass
class _Command:
    """One command of a request: one call, or several merged calls (in queue order)."""

    calls: list[_Call]
    size: int

    @property
    def method(self) -> str:
        return self.calls[0].method

    @property
    def merge(self) -> Merge | None:
        return self.calls[0].merge if len(self.calls) > 1 else None

    @property
    def params(self) -> Mapping[str, Any]:
        merge = self.merge
        return self.calls[0].params if merge is None else merge.combine([c.params for c in self.calls])

    def has_room_for(self, call: _Call, merge: Merge) -> bool:
        """Room for one more call of its target (the caller matched method, merge and target)."""
        return len(self.calls) < merge.max_calls and self.size + call.size <= BATCH_BYTES


@dataclass
class ClientStats:
    requests: int = 0  # HTTP requests to the portal (what the bucket counts)
    batches: int = 0
    commands: int = 0  # method calls delivered, batched or not
    merged: int = 0  # calls that went inside another call's command
    refreshes: int = 0
    query_limit_errors: int = 0


async def refresh_tokens(http: PortalHttp, app: OAuthApp, refresh_token: str) -> Grant:
    """Exchange a refresh token at the OAuth server (settings/oauth/auto-renewal.md)."""
    params = {
        "grant_type": "refresh_token",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "refresh_token": refresh_token,
    }
    try:
        resp = await http.get(app.token_url.rstrip("/") + "/", params=params)
    except SendFailed as exc:
        raise BitrixUnavailable("OAUTH_UNREACHABLE", str(exc), method="oauth/token") from None
    body = resp.body
    if resp.status == 200 and isinstance(body, dict) and body.get("access_token") and not body.get("error"):
        return _grant(body)
    code = str(body.get("error")) if isinstance(body, dict) and body.get("error") else f"HTTP_{resp.status}"
    description = str(body.get("error_description", "")) if isinstance(body, dict) else str(body)[:200]
    if code == "invalid_grant":
        raise NeedsReauth(
            code, description or "refresh token expired or revoked", status=resp.status, method="oauth/token"
        )
    if resp.status >= 500 and not isinstance(body, dict):
        raise BitrixUnavailable(code, description, status=resp.status, method="oauth/token")
    # invalid_client, PAYMENT_REQUIRED, invalid_request...: the app itself is refused
    raise BitrixAuthError(code, description, status=resp.status, method="oauth/token")


def _grant(body: Mapping[str, Any]) -> Grant:
    access, refresh = str(body["access_token"]), str(body.get("refresh_token") or "")
    register_secret(access)
    register_secret(refresh)
    expires_at = None
    if body.get("expires"):
        expires_at = dt.datetime.fromtimestamp(float(body["expires"]), dt.UTC)
    elif body.get("expires_in"):
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(body["expires_in"]))
    return Grant(
        access_token=access,
        refresh_token=refresh,
        expires_at=expires_at,
        member_id=str(body.get("member_id") or ""),
        client_endpoint=body.get("client_endpoint"),
        server_endpoint=body.get("server_endpoint"),
        domain=body.get("domain"),
        scope=body.get("scope"),
        status=body.get("status"),
    )


@dataclass
class _Call:
    method: str
    params: Mapping[str, Any]
    future: asyncio.Future[Reply]
    batchable: bool
    size: int = 0  # its command's query string, bytes
    merge: Merge | None = None

    def resolve(self, outcome: Reply | BaseException) -> None:
        if self.future.done():
            return  # the caller gave up (cancelled)
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class BitrixClient:
    """REST client of one portal. Create through `Portals`; share it for the portal's lifetime."""

    def __init__(
        self,
        auth: PortalAuth,
        store: TokenStore,
        oauth: OAuthApp | None,
        http: PortalHttp,
        *,
        rate_per_s: float = 2.0,
        burst: int = 50,
        max_batch: int = MAX_BATCH,
        max_inflight: int = 8,
        retries: int = 2,
        retry_base_s: float = 0.5,
        bucket: Bucket | None = None,
    ) -> None:
        register_secret(auth.access_token)
        register_secret(auth.refresh_token)
        self._auth = auth
        self._store = store
        self._oauth = oauth
        self._http = http
        # A replacement client (after a reinstall) inherits the bucket: the portal counts on.
        self.bucket: Bucket = bucket or LeakyBucket(rate_per_s, burst)
        self.max_batch = max(1, min(max_batch, MAX_BATCH))
        self._inflight = asyncio.Semaphore(max_inflight)
        self._retries = retries
        self._retry_base = retry_base_s
        self._queue: list[_Call] = []
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._direct = 0  # requests sent by their caller's task (the client was idle)
        self._refresh_lock = asyncio.Lock()
        self._reauth: str | None = None
        self._operating_reset: dict[str, float] = {}  # method -> epoch of operating_reset_at
        self._blocked_until: dict[str, float] = {}  # method -> epoch (OPERATION_TIME_LIMIT)
        self._closing = False  # no new calls; queued ones still go out
        self._closed = False
        self.stats = ClientStats()

    @property
    def member_id(self) -> str:
        return self._auth.member_id

    @property
    def client_endpoint(self) -> str:
        return self._auth.client_endpoint

    # ------------------------------------------------------------------ public API

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        batchable: bool = True,
        merge: Merge | None = None,
    ) -> Any:
        """Run one method; returns its `result`. Raises a `BitrixError` subclass. With `merge`,
        the call may share a command with other queued calls of the same target (merging.py)."""
        return (await self.call_reply(method, params, batchable=batchable, merge=merge)).result

    async def call_reply(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        batchable: bool = True,
        merge: Merge | None = None,
    ) -> Reply:
        """Like `call` but with `total`/`next` for list methods."""
        if self._closing or self._closed:
            raise BitrixUnavailable("CLIENT_CLOSED", "the Bitrix client was closed", method=method)
        if self._reauth is not None:
            raise NeedsReauth("invalid_grant", self._reauth, method=method)
        self._check_blocked(method)
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        size = len(phpquery.encode(clean)) if batchable else 0
        if batchable and (method.lower() == "batch" or size > BATCH_BYTES):
            batchable = False
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        call = _Call(method, clean, future, batchable, size, merge if batchable else None)
        if self._idle():
            await self._send_direct(call)
            return await future
        self._queue.append(call)
        self._dispatch_soon()
        return await future

    def _dispatch_soon(self) -> None:
        self._wake.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name=f"bitrix-dispatch-{self.member_id}")

    def _idle(self) -> bool:
        """Nothing queued or on the wire and room in the bucket: a call sent now overtakes nobody
        and costs no batching (calls made while it is out queue behind it and batch)."""
        return (
            not self._queue
            and not self._senders
            and not self._direct
            and not self._inflight.locked()
            and self.bucket.delay() <= 0
        )

    async def _send_direct(self, call: _Call) -> None:
        """The request of an idle client, in the caller's task; the bookkeeping is a sender's."""
        await self._inflight.acquire()  # free (checked by _idle): no wait
        self._direct += 1
        try:
            await self.bucket.claim()  # shared by instances: one statement, and a wait if others filled it
            await self._send([_Command([call], call.size)])
        finally:  # calls queued meanwhile woke the dispatcher themselves
            self._direct -= 1
            self._inflight.release()

    async def batch(
        self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, halt: bool = False
    ) -> dict[str, Reply | BitrixError]:
        """An explicit batch; parameters may reference earlier results as `$result[key][FIELD]`.

        Returns per key a `Reply` or the command's error; a key missing from the answer (not
        run because `halt` stopped the batch) maps to a transient `NOT_EXECUTED` error.
        """
        if not 0 < len(commands) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} commands, got {len(commands)}")
        cmd = {key: _command(method, params) for key, (method, params) in commands.items()}
        reply = await self.call_reply("batch", {"halt": 1 if halt else 0, "cmd": cmd}, batchable=False)
        return _split_batch(reply.result, [(key, method) for key, (method, _) in commands.items()], self._note_time_for)

    async def aclose(self, grace: float = 0.0) -> None:
        """Stop; with `grace`, calls already queued or on the wire get that long to finish first."""
        self._closing = True
        deadline = time.monotonic() + grace
        while (self._queue or self._senders or self._direct) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._closed = True
        tasks = [t for t in (self._dispatcher, *self._senders) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in self._queue:
            call.resolve(BitrixUnavailable("CLIENT_CLOSED", "the Bitrix client was closed", method=call.method))
        self._queue.clear()

    # ------------------------------------------------------------------ dispatching

    async def _dispatch_loop(self) -> None:
        while not self._closed:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            # No extra turn of the loop is needed to gather a burst: callers made ready by the
            # same event (a batch reply, a claim of many jobs) were scheduled before this
            # dispatcher, so they have queued by now and share this request.
            await self._inflight.acquire()
            wait = self.bucket.delay()
            if wait > 0:
                # Waiting here is what makes batches: calls keep queueing meanwhile.
                self._inflight.release()
                await asyncio.sleep(wait)
                continue
            if self.bucket.shared:
                # reserved (one statement) before the calls are picked: they keep queueing into
                # this request while it waits for what the other instances sent
                await self.bucket.claim()
            commands = self._take()
            if not commands:  # (shared: a reservation for nothing errs on the safe side)
                self._inflight.release()
                continue
            if not self.bucket.shared:
                self.bucket.take()
            task = asyncio.create_task(self._send(commands))
            self._senders.add(task)
            task.add_done_callback(self._sender_done)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        self._senders.discard(task)
        self._inflight.release()

    def _take(self) -> list[_Command]:
        """The next request's commands: one unbatchable call, or up to max_batch commands of
        batchable calls taken in queue order (a mergeable call joins a command of its target
        already in the request; the first call that fits nowhere ends the take)."""
        live: list[_Call] = []
        for call in self._queue:
            if call.future.done():
                continue
            try:
                self._check_blocked(call.method)
            except BitrixError as exc:
                call.resolve(exc)
                continue
            live.append(call)
        self._queue = live
        if not live:
            return []
        first = live[0]
        if not first.batchable or self.max_batch == 1:
            self._queue = live[1:]
            return [_Command([first], first.size)]
        chosen: list[_Command] = []
        open_for: dict[tuple[str, Merge, tuple[Any, ...]], _Command] = {}  # a target's command here
        picked: set[int] = set()
        for call in live:
            if not call.batchable:
                continue
            merge = call.merge
            target = (call.method, merge, merge.target(call.params)) if merge is not None else None
            joined = open_for.get(target) if target is not None else None
            if joined is not None and merge is not None and joined.has_room_for(call, merge):
                joined.calls.append(call)
                joined.size += call.size
                self.stats.merged += 1
            elif len(chosen) < self.max_batch:
                command = _Command([call], call.size)
                chosen.append(command)
                if target is not None:
                    open_for[target] = command
            else:
                break
            picked.add(id(call))
        self._queue = [c for c in live if id(c) not in picked]
        return chosen

    def _settle(self, command: _Command, outcome: Reply | BitrixError) -> None:
        """Resolve a command's calls with its outcome (split back when merged)."""
        merge = command.merge
        if merge is None:
            if isinstance(outcome, Reply):
                self.stats.commands += 1
            command.calls[0].resolve(outcome)
            return
        if isinstance(outcome, BitrixLogicError):
            # refused as a whole: maybe for one item; each call again on its own, first in line
            for call in command.calls:
                call.merge = None
            self._queue[:0] = command.calls
            self._dispatch_soon()
            return
        if isinstance(outcome, BitrixError):
            for call in command.calls:
                call.resolve(outcome)
            return
        parts = merge.split(outcome.result, [merge.count(c.params) for c in command.calls])
        if parts is None:
            for call in command.calls:
                call.resolve(
                    BitrixUnavailable(
                        "UNSPLITTABLE",
                        f"the answer to a merged {command.method} does not match its items",
                        method=command.method,
                        maybe_delivered=True,
                    )
                )
            return
        for call, part in zip(command.calls, parts, strict=True):
            self.stats.commands += 1
            call.resolve(Reply(part, time=outcome.time))

    async def _send(self, commands: list[_Command]) -> None:
        try:
            if len(commands) == 1:
                command = commands[0]
                try:
                    reply = await self._request(command.method, command.params, slot_taken=True)
                except BitrixError as exc:
                    self._settle(command, exc)
                else:
                    self._settle(command, reply)
                return
            keys = [f"c{i}" for i in range(len(commands))]
            cmd = {key: _command(command.method, command.params) for key, command in zip(keys, commands, strict=True)}
            try:
                reply = await self._request("batch", {"halt": 0, "cmd": cmd}, slot_taken=True)
            except BitrixError as exc:
                for command in commands:
                    for call in command.calls:
                        call.resolve(exc)
                return
            self.stats.batches += 1
            outcomes = _split_batch(
                reply.result, [(k, c.method) for k, c in zip(keys, commands, strict=True)], self._note_time_for
            )
            for key, command in zip(keys, commands, strict=True):
                outcome = outcomes[key]
                if isinstance(outcome, OperationTimeLimit):
                    outcome.retry_at = self._block(command.method)
                self._settle(command, outcome)
        except asyncio.CancelledError:
            for call in (call for command in commands for call in command.calls):
                call.resolve(
                    BitrixUnavailable(
                        "CLIENT_CLOSED", "the Bitrix client was closed", method=call.method, maybe_delivered=True
                    )
                )
            raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            log.exception("bitrix send failed", extra={"member_id": self.member_id})
            for call in (call for command in commands for call in command.calls):
                call.resolve(
                    BitrixUnavailable(
                        "CLIENT_BUG", f"{type(exc).__name__}: {exc}", method=call.method, maybe_delivered=True
                    )
                )

    # ------------------------------------------------------------------ one HTTP request

    async def _request(self, method: str, params: Mapping[str, Any], *, slot_taken: bool) -> Reply:
        attempt = 0
        renewals = 0  # a storm may expire the fresh token too; a few renewals, never a loop
        redirects = 0
        while True:
            if not slot_taken:
                await self.bucket.acquire()
            slot_taken = False
            token = self._auth.access_token
            url = self._auth.client_endpoint + method
            self.stats.requests += 1
            began = time.perf_counter()
            try:
                resp = await self._http.post_json(url, {**params, "auth": token})
            except SendFailed as exc:  # maybe_delivered: sent, reply lost; the portal may have run it
                code = "NETWORK_ERROR" if exc.maybe_delivered else "CONNECT_ERROR"
                BITRIX_SECONDS.labels(code).observe(time.perf_counter() - began)
                error: BitrixError = BitrixUnavailable(
                    code, str(exc), method=method, maybe_delivered=exc.maybe_delivered
                )
            else:
                answer = resp.body.get("error") if isinstance(resp.body, dict) else None
                outcome = "ok" if resp.status == 200 and answer is None else str(answer or f"HTTP_{resp.status}")
                BITRIX_SECONDS.labels(outcome[:64]).observe(time.perf_counter() - began)
                if resp.is_redirect and resp.headers.get("location"):
                    redirects += 1
                    if redirects > 3:
                        raise BitrixUnavailable("TOO_MANY_REDIRECTS", str(resp.headers["location"]), method=method)
                    await self._move(resp.headers["location"])
                    continue
                body = resp.body
                if resp.status == 200 and isinstance(body, dict) and "error" not in body:
                    self._note_time(method, body.get("time"))
                    return Reply(body.get("result"), _int(body.get("total")), _int(body.get("next")), body.get("time"))
                error = error_from_reply(resp.status, body, method)
                # only an expired token is renewed: any other refusal would spend a refresh token
                # and come back the same (permissions), or needs an admin (NO_AUTH_FOUND)
                if error.code == TOKEN_EXPIRED and renewals < MAX_RENEWALS:
                    renewals += 1
                    await self._renew(token)
                    continue
                if isinstance(error, BitrixAuthError) and renewals < MAX_RENEWALS and await self._adopt_stored(token):
                    renewals += 1  # a reinstall (or another process) stored new tokens meanwhile
                    continue
                if isinstance(error, QueryLimitExceeded):
                    self.stats.query_limit_errors += 1
                    self.bucket.saturate()
                if isinstance(error, OperationTimeLimit):
                    error.retry_at = self._block(method, body)
                    raise error
            if (
                isinstance(error, BitrixTransientError)
                and not error.maybe_delivered
                and not isinstance(error, BitrixAuthError)
                and attempt < self._retries
            ):
                attempt += 1
                await asyncio.sleep(self._retry_base * (2 ** (attempt - 1)))
                continue
            raise error

    async def _renew(self, stale_token: str) -> None:
        """Single-flight token renewal; whoever comes second finds fresh tokens and returns."""
        async with self._refresh_lock:
            if self._auth.access_token != stale_token:
                return
            if self._reauth is not None:
                raise NeedsReauth("invalid_grant", self._reauth)
            stored = await self._store.load()
            if stored.access_token != stale_token:  # a reinstall stored new tokens meanwhile
                self._adopt(stored)
                return
            if self._oauth is None:
                raise BitrixAuthError("NO_OAUTH_APP", "THOTH_BITRIX_CLIENT_ID / THOTH_BITRIX_CLIENT_SECRET are not set")
            try:
                grant = await refresh_tokens(self._http, self._oauth, stored.refresh_token)
            except NeedsReauth as exc:
                self._reauth = f"{exc.code}: {exc.description}"
                await self._store.mark_needs_reauth(self._reauth)
                log.warning(
                    "bitrix portal needs re-authorisation", extra={"member_id": self.member_id, "error": exc.code}
                )
                raise
            self.stats.refreshes += 1
            endpoint = grant.client_endpoint or stored.client_endpoint
            self._adopt(
                PortalAuth(stored.member_id, endpoint, grant.access_token, grant.refresh_token or stored.refresh_token)
            )
            # Stored before anyone uses it: the old refresh token is now spent.
            await self._store.save_grant(grant)
            log.info("bitrix tokens renewed", extra={"member_id": self.member_id})

    async def _adopt_stored(self, stale_token: str) -> bool:
        """Take tokens stored since `stale_token` was read (no OAuth call); True if there were any."""
        async with self._refresh_lock:
            if self._auth.access_token != stale_token:
                return True
            stored = await self._store.load()
            if stored.access_token and stored.access_token != stale_token:
                self._adopt(stored)
                return True
            return False

    def _adopt(self, auth: PortalAuth) -> None:
        register_secret(auth.access_token)
        register_secret(auth.refresh_token)
        self._auth = auth

    async def _move(self, location: str) -> None:
        """The portal changed domain (302): keep the path, take the new scheme and host."""
        new = urlsplit(location)
        old = urlsplit(self._auth.client_endpoint)
        if not new.netloc or new.scheme not in ("http", "https"):
            raise BitrixUnavailable("BAD_REDIRECT", location)
        endpoint = f"{new.scheme}://{new.netloc}{old.path or '/rest/'}"
        if endpoint == self._auth.client_endpoint:
            raise BitrixUnavailable("REDIRECT_LOOP", location)
        log.info("bitrix portal moved", extra={"member_id": self.member_id, "from": old.netloc, "to": new.netloc})
        self._auth.client_endpoint = endpoint
        await self._store.save_endpoint(endpoint)

    # ------------------------------------------------------------------ operating time (429)

    def _note_time(self, method: str, timing: Any) -> None:
        if isinstance(timing, dict) and timing.get("operating_reset_at"):
            try:
                self._operating_reset[method.lower()] = float(timing["operating_reset_at"])
            except (TypeError, ValueError):
                pass

    def _note_time_for(self, method: str, timing: Any) -> None:
        self._note_time(method, timing)

    def _block(self, method: str, body: Any = None) -> float:
        """Block `method` until its operating budget resets; the time comes from the last answer."""
        until = None
        if isinstance(body, dict) and isinstance(body.get("time"), dict):
            until = _float(body["time"].get("operating_reset_at"))
        until = until or self._operating_reset.get(method.lower())
        now = time.time()
        if until is None or until <= now:
            until = now + OPERATING_FALLBACK_S
        self._blocked_until[method.lower()] = until
        return until

    def _check_blocked(self, method: str) -> None:
        until = self._blocked_until.get(method.lower())
        if until is None:
            return
        if until <= time.time():
            del self._blocked_until[method.lower()]
            return
        raise OperationTimeLimit(
            "OPERATION_TIME_LIMIT", "method blocked until its operating time resets", method=method, retry_at=until
        )


def _command(method: str, params: Mapping[str, Any]) -> str:
    query = phpquery.encode({k: v for k, v in params.items() if v is not None})
    return f"{method}?{query}" if query else method


def _split_batch(result: Any, keys: list[tuple[str, str]], note_time: Any) -> dict[str, Reply | BitrixError]:
    """Per-command outcome of a batch answer (PHP turns empty objects into [])."""
    body = result if isinstance(result, dict) else {}
    results = _obj(body.get("result"))
    errors = _obj(body.get("result_error"))
    totals = _obj(body.get("result_total"))
    nexts = _obj(body.get("result_next"))
    times = _obj(body.get("result_time"))
    out: dict[str, Reply | BitrixError] = {}
    for key, method in keys:
        if key in errors:
            err = errors[key] if isinstance(errors[key], dict) else {}
            out[key] = error_from_code(
                str(err.get("error") or "ERROR"), str(err.get("error_description") or ""), status=None, method=method
            )
        elif key in results:
            note_time(method, times.get(key))
            out[key] = Reply(results[key], _int(totals.get(key)), _int(nexts.get(key)), times.get(key))
        else:
            out[key] = BitrixUnavailable("NOT_EXECUTED", "batch stopped before this command (halt)", method=method)
    return out


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def http_client() -> PortalHttp:
    """The shared connection pool for all portals (Bitrix allows 60 s per request)."""
    return PortalHttp()
