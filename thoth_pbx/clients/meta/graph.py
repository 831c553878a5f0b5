"""The only Graph API client: base URL, version, bearer token, timeouts, retries, typed errors.

Every outbound call to Meta goes through `GraphClient.request`. Graph answers errors as
`{"error": {"message", "type", "code", "error_subcode", "error_data", "fbtrace_id"}}`;
they become `GraphError` (or a subclass) carrying exactly those fields, so callers decide on
`code`/`subcode`, never on message text. Retries: HTTP 5xx/429, Graph's transient codes and
network errors, with exponential backoff and jitter; a non-idempotent POST is retried only
when Meta says for sure nothing was done (rate limits), never after an ambiguous 5xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.metrics import GRAPH_SECONDS

log = logging.getLogger(__name__)

# Throttling codes: the request was refused, not executed, so even a POST may be repeated.
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131056})
# Meta-side trouble: "temporary", "something went wrong", "service unavailable".
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004}) | RATE_LIMIT_CODES
AUTH_CODES = frozenset({102, 104, 190, 0})


@dataclass
class GraphError(Exception):
    """A Graph error answer (or a transport failure, then `code` is None)."""

    message: str
    code: int | None = None
    subcode: int | None = None
    type: str | None = None
    fbtrace_id: str | None = None
    http_status: int | None = None
    error_data: dict[str, Any] = field(default_factory=dict)
    is_transient: bool = False
    retry_after: float | None = None  # seconds, from a Retry-After header

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [f"Graph error {self.code}" if self.code is not None else "Graph request failed"]
        if self.subcode:
            parts.append(f"subcode {self.subcode}")
        text = ", ".join(parts) + f": {self.message}"
        return text + (f" (fbtrace_id {self.fbtrace_id})" if self.fbtrace_id else "")

    @property
    def details(self) -> str | None:
        """WhatsApp's `error_data.details`: the most specific explanation Meta gives."""
        details = self.error_data.get("details") if isinstance(self.error_data, dict) else None
        return details if isinstance(details, str) else None

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "subcode": self.subcode,
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "fbtrace_id": self.fbtrace_id,
            "http_status": self.http_status,
        }


class GraphAuthError(GraphError):
    """The access token is missing, invalid or expired (codes 0, 102, 104, 190)."""


class GraphRateLimited(GraphError):
    """Meta throttled us; safe to repeat later."""


class GraphUnavailable(GraphError):
    """Network failure, timeout, or a 5xx without a Graph error body."""


class MediaTooLarge(GraphError):
    """A media file over our size cap: not fetched (and not worth retrying)."""


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_from_response(status: int, body: Any) -> GraphError:
    """Turn an error answer into the matching typed exception (pure)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        cls = GraphUnavailable if status >= 500 or status == 429 else GraphError
        return cls(
            f"HTTP {status} without a Graph error body", http_status=status, is_transient=status >= 500 or status == 429
        )
    code = _int(err.get("code"))
    error_data = err.get("error_data")
    kwargs: dict[str, Any] = {
        "message": str(err.get("message") or f"HTTP {status}"),
        "code": code,
        "subcode": _int(err.get("error_subcode")),
        "type": err.get("type") if isinstance(err.get("type"), str) else None,
        "fbtrace_id": err.get("fbtrace_id") if isinstance(err.get("fbtrace_id"), str) else None,
        "http_status": status,
        "error_data": error_data if isinstance(error_data, dict) else {},
        "is_transient": bool(err.get("is_transient")) or code in TRANSIENT_CODES or status >= 500,
    }
    if code in AUTH_CODES:
        kwargs["is_transient"] = False
        return GraphAuthError(**kwargs)
    if code in RATE_LIMIT_CODES or status == 429:
        return GraphRateLimited(**kwargs)
    return GraphError(**kwargs)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def should_retry(exc: GraphError, *, idempotent: bool) -> bool:
    """Retry policy (pure): throttling always; other transient trouble only if repeating is safe."""
    if isinstance(exc, GraphAuthError):
        return False
    if isinstance(exc, GraphRateLimited):
        return True
    return exc.is_transient and idempotent


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff: float = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return backoff * (0.5 + random.random() / 2)


DEFAULT_TIMEOUT = httpx.Timeout(20.0, connect=5.0)


class GraphClient:
    """One httpx connection pool for every WABA; the token is given per call."""

    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = f"{base_url.rstrip('/')}/{version}"
        self.retry = retry
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "thoth-pbx"},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, token: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, token, params=params, idempotent=True)

    async def post(
        self, path: str, token: str, json: Mapping[str, Any], *, idempotent: bool = False, attempts: int | None = None
    ) -> dict[str, Any]:
        return await self.request("POST", path, token, json=json, idempotent=idempotent, attempts=attempts)

    async def upload(
        self, path: str, token: str, fields: Mapping[str, str], file: tuple[str, bytes, str]
    ) -> dict[str, Any]:
        """A multipart POST (`/{phone_number_id}/media`): `file` is (name, bytes, MIME type). Not
        retried here: the caller's job retries, and a repeated upload only costs an orphan id."""
        register_secret(token)
        return await self._send("POST", "/" + path.lstrip("/"), token, data=dict(fields), files={"file": file})

    async def download(self, url: str, token: str, dest: Path, *, max_bytes: int) -> tuple[int, str]:
        """Stream a media URL Meta handed out (it needs the Bearer token) into `dest`; returns
        the size and the sha256 (hex) of what was written. Larger than `max_bytes`:
        MediaTooLarge, and nothing is kept."""
        register_secret(token)
        written = 0
        digest = hashlib.sha256()
        try:
            async with self._http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response.status_code, _json_or_none(response))
                with dest.open("wb") as fh:
                    async for chunk in response.aiter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise MediaTooLarge(f"the file is larger than {max_bytes} bytes", is_transient=False)
                        digest.update(chunk)
                        fh.write(chunk)
        except httpx.TimeoutException as exc:
            dest.unlink(missing_ok=True)
            raise GraphUnavailable(f"timeout downloading media: {type(exc).__name__}", is_transient=True) from None
        except httpx.TransportError as exc:
            dest.unlink(missing_ok=True)
            raise GraphUnavailable(f"cannot download media: {type(exc).__name__}: {exc}", is_transient=True) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return written, digest.hexdigest()

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """`attempts=1` leaves every retry to the caller (an outbox job keeps its chat's order)."""
        register_secret(token)
        url = "/" + path.lstrip("/")
        attempt = 0
        limit = self.retry.attempts if attempts is None else attempts
        while True:
            attempt += 1
            try:
                return await self._send(method, url, token, params=params, json=json)
            except GraphError as exc:
                if attempt >= limit or not should_retry(exc, idempotent=idempotent):
                    raise
                pause = self.retry.delay(attempt, getattr(exc, "retry_after", None))
                log.warning(
                    "graph retry",
                    extra={
                        "method": method,
                        "path": url,
                        "attempt": attempt,
                        "code": exc.code,
                        "http_status": exc.http_status,
                        "pause_s": round(pause, 2),
                    },
                )
                await asyncio.sleep(pause)

    async def _send(self, method: str, url: str, token: str, **kwargs: Any) -> dict[str, Any]:
        began = time.perf_counter()
        outcome = "ok"
        try:
            return await self._exchange(method, url, token, **kwargs)
        except GraphError as exc:
            outcome = str(exc.code) if exc.code is not None else "unavailable"
            raise
        finally:
            GRAPH_SECONDS.labels(method, outcome).observe(time.perf_counter() - began)

    async def _exchange(self, method: str, url: str, token: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise GraphUnavailable(f"timeout talking to Graph: {type(exc).__name__}", is_transient=True) from None
        except httpx.TransportError as exc:
            raise GraphUnavailable(f"cannot reach Graph: {type(exc).__name__}: {exc}", is_transient=True) from None
        body = _json_or_none(response)
        if response.is_success and isinstance(body, dict):
            return body
        if response.is_success:
            raise GraphUnavailable(
                f"HTTP {response.status_code} with a non-JSON body", http_status=response.status_code, is_transient=True
            )
        error = error_from_response(response.status_code, body)
        retry_after = response.headers.get("Retry-After")
        if retry_after and retry_after.isdigit():
            error.retry_after = float(retry_after)
        raise error
