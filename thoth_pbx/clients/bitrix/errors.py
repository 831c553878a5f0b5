"""Typed Bitrix24 errors, so business code never inspects raw `{"error": ...}` dicts.

Two questions decide what a caller does with a failure, and every error answers both:
- `retryable`: may the same request succeed later without anyone changing it (outage,
  rate limit, token being renewed)? Logic errors (`ERROR_CORE`, `INVALID_ARGUMENT`, an
  unknown method, missing scope) are not: resending them would fail the same way.
- `maybe_delivered`: could Bitrix have executed the request although we saw no reply (a
  read timeout, a dropped connection, a 5xx from the application)? The outbox remembers
  this so that the next attempt knows a "not found"-style answer may mean "already done".
"""

from __future__ import annotations

from typing import Any

# Codes documented as system errors or method errors that mean "this request is wrong".
_AUTH_CODES = {"expired_token", "NO_AUTH_FOUND", "invalid_token", "INVALID_TOKEN"}
# Permission refusals: a new token would be refused the same way, so they are never a reason to
# refresh (Bitrix answers some of them with 401 as well as the documented 403).
_PERMISSION_HINTS = {
    "insufficient_scope": "the app was not granted the scope this method needs: add it to the app's scopes "
    "in Bitrix24 and reinstall the app",
    "ACCESS_DENIED": "the portal refused access (REST is for commercial plans; some methods need an app context "
    "or an administrator)",
    "user_access_error": "the Bitrix24 user the app acts as has no access to this method: install the app as an "
    "administrator or give that user access",
    "INVALID_CREDENTIALS": "the Bitrix24 user the app acts as lacks the rights for this method",
    "WRONG_AUTH_TYPE": "this method works only in an application's context (OAuth), not through a webhook",
}
TOKEN_EXPIRED = "expired_token"
_LIMIT_CODES = {"QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"}


class BitrixError(Exception):
    retryable = False
    maybe_delivered = False

    def __init__(
        self, code: str, description: str = "", *, status: int | None = None, method: str | None = None
    ) -> None:
        self.code = code
        self.description = description
        self.status = status
        self.method = method
        where = f"{method}: " if method else ""
        http = f" (HTTP {status})" if status else ""
        super().__init__(f"{where}{code}{http}: {description}" if description else f"{where}{code}{http}")


class BitrixLogicError(BitrixError):
    """Bitrix understood the request and refused it (ERROR_CORE, INVALID_ARGUMENT, ...). Not retried."""

    def is_call_not_found(self) -> bool:
        """finish on a CALL_ID Bitrix no longer has among active calls (it was finished already, or never registered)."""
        return self.code == "ERROR_CORE" and self.description.startswith("Call is not found")


class BitrixTransientError(BitrixError):
    """Worth retrying later; `retry_at` (epoch seconds) when Bitrix said when."""

    retryable = True

    def __init__(
        self,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        method: str | None = None,
        retry_at: float | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(code, description, status=status, method=method)
        self.retry_at = retry_at
        self.maybe_delivered = maybe_delivered


class BitrixUnavailable(BitrixTransientError):
    """Network failure, timeout or a 5xx: the portal is down or overloaded."""


class QueryLimitExceeded(BitrixTransientError):
    """503 QUERY_LIMIT_EXCEEDED / OVERLOAD_LIMIT: the request was refused before running."""


class OperationTimeLimit(BitrixTransientError):
    """429 OPERATION_TIME_LIMIT: this method is blocked for the app until `retry_at`."""


class BitrixAuthError(BitrixTransientError):
    """Authorisation failed even after renewing the token (or the OAuth server refused the app).

    Retryable because the fix happens elsewhere (an admin reinstalls, pays, fixes
    client_id/secret); the request itself was not executed.
    """


class BitrixPermissionError(BitrixLogicError):
    """The portal refused the app or its user the method. Not retried and never a token refresh:
    an admin must change scopes or rights; `hint` tells them what."""

    def __init__(
        self, code: str, description: str = "", *, status: int | None = None, method: str | None = None
    ) -> None:
        super().__init__(code, description, status=status, method=method)
        self.hint = _PERMISSION_HINTS.get(code, "the portal refused access")
        self.args = (f"{self.args[0]} -- {self.hint}",)

    def __str__(self) -> str:
        return str(self.args[0])


class NeedsReauth(BitrixAuthError):
    """The refresh token is dead (`invalid_grant`): the portal must reinstall/re-authorise the app."""


def error_from_reply(status: int, body: Any, method: str | None) -> BitrixError:
    """Map an HTTP status plus the `{"error", "error_description"}` body to a typed error."""
    code, description = "HTTP_ERROR", ""
    if isinstance(body, dict) and body.get("error"):
        code = str(body.get("error"))
        description = str(body.get("error_description") or "")
    elif isinstance(body, str):
        description = body[:200]
    return error_from_code(code, description, status=status, method=method)


def error_from_code(code: str, description: str, *, status: int | None, method: str | None) -> BitrixError:
    kwargs: dict[str, Any] = {"status": status, "method": method}
    if code in _LIMIT_CODES:
        return QueryLimitExceeded(code, description, **kwargs)
    if code == "OPERATION_TIME_LIMIT" or status == 429:
        return OperationTimeLimit(code, description, **kwargs)
    if code in _PERMISSION_HINTS:
        return BitrixPermissionError(code, description, **kwargs)
    if code in _AUTH_CODES or status == 401:
        return BitrixAuthError(code, description, **kwargs)
    if code in ("INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER") or (status is not None and status >= 500):
        # A 503 (outage page, maintenance) is refused before the method runs; a 500/502/504 may
        # come after the method did its work, so we cannot know what happened.
        delivered = not (status == 503 or code == "PORTAL_DELETED")
        return BitrixUnavailable(code, description, maybe_delivered=delivered, **kwargs)
    return BitrixLogicError(code, description, **kwargs)
