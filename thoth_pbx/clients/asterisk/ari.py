"""Asterisk REST Interface client: REST calls plus the `/ari/events` websocket for our app.

A thin aiohttp client rather than asyncari (no reconnect, kills the task group when an
event takes > ~1.5 s; see docs/decisions.md). The websocket is kept open by a supervisor
with exponential backoff; each event is handed to `on_event` which must not block (the
call flow runs its own per-call tasks). This is the only module that speaks ARI.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from thoth_pbx.clients.asterisk.reconnect import Backoff, Supervisor, pause
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.settings import AriTarget

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
ConnectCallback = Callable[[], Awaitable[None] | None]


class AriError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"ARI {status}: {message}")


class AriNotConnected(AriError):
    def __init__(self, message: str) -> None:
        super().__init__(0, message)


@dataclass
class AriStatus:
    state: str  # disabled | connecting | connected | down
    since: dt.datetime
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since.isoformat(), "error": self.error}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AriClient:
    def __init__(
        self,
        target: AriTarget | None,
        app: str,
        *,
        on_event: EventCallback | None = None,
        on_connect: ConnectCallback | None = None,
        request_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        heartbeat: float = 10.0,
        max_connections: int = 50,
    ) -> None:
        self.target = target
        self.app = app
        self.on_event = on_event
        self.on_connect = on_connect
        self.request_timeout = request_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        # Asterisk refuses HTTP sessions beyond http.conf `sessionlimit` (default 100); aiohttp
        # would open up to 100 plus the events websocket, so a hang-up burst could hit it.
        self.max_connections = max_connections
        self.status = AriStatus("disabled" if target is None else "connecting", _now())
        self.connections = 0
        self._session: aiohttp.ClientSession | None = None
        self._supervisor = Supervisor("ari-supervisor", self._supervise)
        self._connected = asyncio.Event()
        if target is not None:
            register_secret(target.password)

    def start(self) -> None:
        if self.target is None or self._supervisor.running:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            headers={"Authorization": basic_auth_header(self.target.user, self.target.password)},
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
        )
        self._supervisor.start()

    async def stop(self) -> None:
        await self._supervisor.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._connected.clear()
        if self.target is not None:
            self.status = AriStatus("down", _now(), "stopped")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise AriNotConnected(f"ARI not connected after {timeout}s: {self.status.error}") from None

    async def _supervise(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._supervisor.stopping.is_set():
            try:
                await self._run_websocket()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError, AriError) as exc:
                reason = str(exc) or type(exc).__name__
                if self.status.state != "down" or self.status.error != reason:
                    log.warning("ARI unavailable", extra={"ari": str(self.target), "error": reason})
                self._set_state("down", reason)
            finally:
                self._connected.clear()
            await pause(self._supervisor.stopping, backoff.next_delay())

    async def _run_websocket(self) -> None:
        assert self.target is not None and self._session is not None
        self._set_state("connecting", self.status.error)
        url = f"{self.target.base_url}/ari/events"
        async with self._session.ws_connect(
            url,
            params={"app": self.app, "subscribeAll": "false"},
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        ) as ws:
            self.connections += 1
            self.status = AriStatus("connected", _now())
            self._connected.set()
            log.info("ARI connected", extra={"ari": str(self.target), "app": self.app})
            if self.on_connect is not None:  # e.g. the database is away: events must still flow
                await _run_hook("ARI on-connect handler failed", self.on_connect)
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        event = json.loads(msg.data)
                    except json.JSONDecodeError:
                        log.warning("ARI sent a non-JSON frame")
                        continue
                    if self.on_event is not None:
                        await _run_hook(
                            "ARI event handler failed", self.on_event, event, extra={"event": event.get("type")}
                        )
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
        self._set_state("down", "websocket closed by Asterisk")

    def _set_state(self, state: str, error: str | None) -> None:
        if self.status.state != state or self.status.error != error:
            self.status = AriStatus(state, _now(), error)

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> Any:
        """One REST call, e.g. request("POST", "/channels/ID/answer"); returns parsed JSON or None."""
        body = await self.request_bytes(method, path, params=params, json_body=json_body)
        return json.loads(body) if body else None

    async def request_bytes(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None
    ) -> bytes:
        """One REST call returning the raw body (stored recordings are binary)."""
        if self.target is None or self._session is None:
            raise AriNotConnected("ARI is not configured or not started")
        url = f"{self.target.base_url}/ari{path}"
        clean_params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self._session.request(method, url, params=clean_params, json=json_body) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    try:
                        message = json.loads(body).get("message", body.decode(errors="replace"))
                    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                        message = body.decode(errors="replace")
                    raise AriError(resp.status, message or resp.reason or "error")
                return body
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AriNotConnected(f"ARI request {method} {path} failed: {exc or type(exc).__name__}") from None


async def _run_hook(
    failure: str, hook: Callable[..., Awaitable[None] | None], *args: Any, extra: dict[str, Any] | None = None
) -> None:
    """Call a user callback (sync or async); its failure is logged, never ends the connection."""
    try:
        result = hook(*args)
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception(failure, extra=extra)


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
