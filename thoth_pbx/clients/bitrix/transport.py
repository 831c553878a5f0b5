"""HTTP to Bitrix24 portals and their OAuth server: one aiohttp connection pool for all portals.

aiohttp rather than httpx here (docs/decisions.md D8): every call of every portal goes
through this, and on this box a request reached a local server 0.2-0.8 ms after it was
made with aiohttp against 1.1-2.0 ms with httpx (bench figures in docs/benchmarks-calls.md);
the call's `register` is on the path an operator waits for. The REST logic (rest.py)
sees only `HttpReply` and `SendFailed`, so the library stays a detail of this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: Any  # the JSON value, or the text when it is not JSON

    @property
    def is_redirect(self) -> bool:
        return self.status in REDIRECTS


class SendFailed(Exception):
    """No reply. `maybe_delivered`: the request may have reached the portal (and run there)."""

    def __init__(self, detail: str, *, maybe_delivered: bool) -> None:
        super().__init__(detail)
        self.maybe_delivered = maybe_delivered


class PortalHttp:
    """Shared by every portal's client; redirects are returned, never followed (a 302 moves a portal)."""

    def __init__(
        self, *, connect_timeout_s: float = 10.0, read_timeout_s: float = 70.0, max_connections: int = 100
    ) -> None:
        # Bitrix24 lets a request run for up to 60 s; a connect that takes 10 s will not succeed
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use: needs the running loop
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers={"User-Agent": "thoth-pbx"},
            )
        return self._session

    async def post_json(self, url: str, body: Mapping[str, Any]) -> HttpReply:
        return await self._send("POST", url, json_body=body)

    async def get(self, url: str, params: Mapping[str, str]) -> HttpReply:
        return await self._send("GET", url, params=params)

    async def _send(
        self, method: str, url: str, *, json_body: Any = None, params: Mapping[str, str] | None = None
    ) -> HttpReply:
        try:
            async with self._client().request(
                method, url, json=json_body, params=params, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                return HttpReply(resp.status, resp.headers, _decode(raw))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}", maybe_delivered=False) from None
        except (TimeoutError, aiohttp.ClientError) as exc:  # sent, reply lost: it may have run
            raise SendFailed(f"{type(exc).__name__}: {exc}", maybe_delivered=True) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
