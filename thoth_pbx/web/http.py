"""Middlewares of the aiohttp app: JSON errors that name the field, admin HTTP Basic auth with throttling."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from thoth_pbx.core.http import ADMIN_PREFIX, METRICS_PATH, error_response
from thoth_pbx.core.secrets import constant_time_equal
from thoth_pbx.core.validation import FieldError
from thoth_pbx.web.login_throttle import LoginThrottle

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FieldError as exc:
        return error_response(exc.field, exc.message, exc.status)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400 and exc.content_type != "application/json":
            return error_response("path" if exc.status in (404, 405) else "request", exc.reason, exc.status)
        raise


def admin_auth(
    user: str, password: str, throttle: LoginThrottle | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"{user}:{password}"
    limiter = throttle or LoginThrottle()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX) or request.path in (ADMIN_PREFIX.rstrip("/"), METRICS_PATH):
            address = request.remote or "unknown"
            wait = limiter.retry_after(address)
            if wait is not None:
                response = error_response("authorization", f"too many failed logins; try again in {wait} s", 429)
                response.headers["Retry-After"] = str(wait)
                return response
            header = request.headers.get("Authorization", "")
            if not _authorised(header, expected):
                if header:  # a browser's first, credential-less request is not a failed login
                    failures = limiter.failed(address)
                    # never the password, nor the user name typed (it is sometimes the password)
                    log.warning(
                        "admin login failed",
                        extra={"remote": address, "failures": failures, "user_known": _given_user(header) == user},
                    )
                response = error_response("authorization", "admin credentials required (HTTP Basic)", 401)
                response.headers["WWW-Authenticate"] = 'Basic realm="thoth-pbx admin"'
                return response
            limiter.succeeded(address)
        return await handler(request)

    return middleware


def _given_user(header: str) -> str | None:
    scheme, _, encoded = header.partition(" ")
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None


def _authorised(header: str, expected: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return constant_time_equal(given, expected)
